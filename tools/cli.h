/*
 * cli.h -- what the command-line fronts share: size formatting, progress display.
 */
#ifndef DELTAFS_TOOLS_CLI_H
#define DELTAFS_TOOLS_CLI_H

#include <stdint.h>

/* Format n bytes as "1.23 GB" (decimal units, as zstd and ls -h --si do) into buf. */
const char *cli_size(uint64_t n, char buf[32]);

/* Progress: on a terminal a bar redrawn in place with bytes, MB/s and ETA; otherwise a plain line
 * at every 10%. ud is a cli_progress set up by cli_progress_init. */
typedef struct cli_progress {
	int tty;
	double t0;
	int last_decile;
	const char *label;
} cli_progress;

void cli_progress_init(cli_progress *p, const char *label);
void cli_progress_cb(void *ud, uint64_t done, uint64_t total);
void cli_progress_end(cli_progress *p);

double cli_now(void);

#endif
