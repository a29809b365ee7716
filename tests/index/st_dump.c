/*
 * st_dump.c -- print what st_parse makes of a safetensors file, one line per tensor in st_file
 * order: "name<TAB>dtype<TAB>d0,d1,...<TAB>begin<TAB>end", after a first line
 * "header_len<TAB>data_start<TAB>file_size". check_shared_st.py compares this with its own reading
 * of the header, so the real checkpoints are checked by an independent parser.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../index/safetensors.h"

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: st_dump FILE.safetensors\n");
		return 2;
	}
	int fd = open(argv[1], O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st)) {
		fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	void *map = NULL;
	if (st.st_size && (map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
		fprintf(stderr, "%s: mmap: %s\n", argv[1], strerror(errno));
		return 1;
	}
	close(fd);
	st_file f;
	df_err err;
	if (st_parse(map, (size_t)st.st_size, argv[1], &f, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	printf("%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\n", f.header_len, f.data_start, f.file_size);
	for (size_t i = 0; i < f.ntensors; i++) {
		const st_tensor *t = &f.tensors[i];
		printf("%s\t%s\t", t->name, dt_name(t->dtype));
		for (unsigned d = 0; d < t->ndim; d++)
			printf("%s%" PRIu64, d ? "," : "", t->shape[d]);
		printf("\t%" PRIu64 "\t%" PRIu64 "\n", t->begin, t->end);
	}
	st_free(&f);
	if (map)
		munmap(map, (size_t)st.st_size);
	return 0;
}
