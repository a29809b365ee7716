#include "cli.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

const char *cli_size(uint64_t n, char buf[32])
{
	static const char *const unit[] = {"B", "kB", "MB", "GB", "TB", "PB"};
	double v = (double)n;
	int u = 0;
	while (v >= 1000 && u < 5) {
		v /= 1000;
		u++;
	}
	snprintf(buf, 32, u ? "%.2f %s" : "%.0f %s", v, unit[u]);
	return buf;
}

double cli_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cli_progress_init(cli_progress *p, const char *label)
{
	p->tty = isatty(STDERR_FILENO);
	p->t0 = cli_now();
	p->last_decile = -1;
	p->label = label;
}

void cli_progress_cb(void *ud, uint64_t done, uint64_t total)
{
	cli_progress *p = ud;
	double dt = cli_now() - p->t0, frac = total ? (double)done / (double)total : 1;
	double rate = dt > 0 ? (double)done / dt : 0;
	char a[32], b[32];
	if (p->tty) {
		int w = 30, fill = (int)(frac * w);
		double eta = rate > 0 ? (double)(total - done) / rate : 0;
		fprintf(stderr, "\r%s [%.*s%*s] %3d%% %s/%s %6.1f MB/s ETA %4.0fs ", p->label, fill,
			"##############################", w - fill, "", (int)(frac * 100),
			cli_size(done, a), cli_size(total, b), rate / 1e6, eta);
		fflush(stderr);
	} else if ((int)(frac * 10) > p->last_decile) {
		p->last_decile = (int)(frac * 10);
		fprintf(stderr, "%s: %3d%% %s of %s, %.1f MB/s\n", p->label, p->last_decile * 10,
			cli_size(done, a), cli_size(total, b), rate / 1e6);
	}
}

void cli_progress_end(cli_progress *p)
{
	if (p->tty)
		fputc('\n', stderr);
}
