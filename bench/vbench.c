/*
 * vbench: the measuring loops of the benchmark, in C so that the harness
 * costs the same against every filesystem. Each prints one number on
 * standard output and exits non-zero if any result is wrong.
 *
 *   vbench read FILE VALUE THREADS SECONDS
 *       open + read + close in a loop on THREADS threads; checks every read
 *       returns VALUE exactly; prints operations per second.
 *   vbench lookup DIR FIRST COUNT STRIDE
 *       stat()s DIR/K<FIRST>, DIR/K<FIRST+STRIDE>, ... (COUNT names, each
 *       once); prints nanoseconds per stat.
 *   vbench write FILE VALUE COUNT
 *       open(O_WRONLY|O_TRUNC) + write + close, COUNT times, each value
 *       different; checks close() and reads the last one back; prints
 *       microseconds per write.
 *   vbench create DIR VALUE COUNT
 *       open(O_WRONLY|O_CREAT|O_EXCL) + write + close of COUNT new files
 *       DIR/N000000 ...; checks close() and reads each back; prints
 *       microseconds per file.
 *   vbench fsync-rename DIR VALUE COUNT
 *       the durable-write baseline: write DIR/.tmp, fsync, rename it over
 *       DIR/target; prints microseconds per write.
 *   vbench paired write|create TARGET DIR VALUE COUNT
 *       `write TARGET` or `create TARGET` and `fsync-rename DIR`, one
 *       operation of each in turn (the order flips each time), so that both
 *       see the disk as it is at that moment; checks as they do; prints the
 *       microseconds per operation of each: "TARGET DIR".
 *   vbench put FILE
 *       one durable write of standard input to FILE (temporary file, fsync,
 *       rename): the process a CLI `set` is compared with.
 *   vbench deny FILE THREADS
 *       opens FILE in a loop on THREADS threads, each open expected to fail
 *       with EACCES (a user flooding the log with denials), until standard
 *       input ends; prints the number of attempts. Exits 1 if an open
 *       succeeds or fails otherwise.
 *   vbench hold DIR COUNT VALUE
 *       opens and reads DIR/K000000 .. COUNT-1, prints "open", waits for a
 *       line on standard input, closes them all, prints "closed", waits for
 *       standard input to end.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 4096

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path)
{
	fprintf(stderr, "vbench: %s %s: %s\n", what, path, strerror(errno));
	exit(1);
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads fd from the start and compares with want; false on any mismatch. */
static bool read_matches(int fd, const char *want, size_t len)
{
	char buf[BUF_SIZE];
	ssize_t n = read(fd, buf, sizeof(buf));

	return n >= 0 && (size_t)n == len && memcmp(buf, want, len) == 0;
}

struct reader {
	pthread_t thread;
	const char *path;
	const char *value;
	size_t len;
	pthread_barrier_t *start;
	double deadline_after;
	long ops;
	long bad;
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	double deadline;
	int fd;

	pthread_barrier_wait(rd->start);
	deadline = now() + rd->deadline_after;
	while (now() < deadline) {
		fd = open(rd->path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			rd->bad++;
			break;
		}
		if (!read_matches(fd, rd->value, rd->len))
			rd->bad++;
		if (close(fd) < 0)
			rd->bad++;
		rd->ops++;
	}
	return NULL;
}

static int cmd_read(char **argv)
{
	int nthreads = atoi(argv[2]);
	double seconds = atof(argv[3]), t0, t1;
	struct reader *rds;
	pthread_barrier_t start;
	long ops = 0, bad = 0;

	if (nthreads < 1 || seconds <= 0)
		return 2;
	rds = calloc((size_t)nthreads, sizeof(*rds));
	if (!rds)
		return 1;
	pthread_barrier_init(&start, NULL, (unsigned)nthreads + 1);
	for (int i = 0; i < nthreads; i++) {
		rds[i] = (struct reader){ .path = argv[0], .value = argv[1], .len = strlen(argv[1]),
					  .start = &start, .deadline_after = seconds };
		if (pthread_create(&rds[i].thread, NULL, reader_main, &rds[i]) != 0)
			return 1;
	}
	pthread_barrier_wait(&start);
	t0 = now();
	for (int i = 0; i < nthreads; i++) {
		pthread_join(rds[i].thread, NULL);
		ops += rds[i].ops;
		bad += rds[i].bad;
	}
	t1 = now();
	if (bad) {
		fprintf(stderr, "vbench: %s: %ld of %ld reads failed or returned wrong bytes\n",
			argv[0], bad, ops);
		return 1;
	}
	printf("%.0f\n", (double)ops / (t1 - t0));
	free(rds);
	return 0;
}

static int cmd_lookup(char **argv)
{
	long first = atol(argv[1]), count = atol(argv[2]), stride = atol(argv[3]);
	char path[4096];
	struct stat st;
	double t0;

	t0 = now();
	for (long i = 0; i < count; i++) {
		snprintf(path, sizeof(path), "%s/K%06ld", argv[0], first + i * stride);
		if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
			die("stat", path);
	}
	printf("%.0f\n", (now() - t0) * 1e9 / (double)count);
	return 0;
}

/* The value of the i-th write: each one different. */
static size_t value_of(char *buf, size_t size, const char *value, long i)
{
	return (size_t)snprintf(buf, size, "%s-%06ld", value, i);
}

/* open(O_WRONLY|O_TRUNC) + write + close of path. */
static void write_once(const char *path, const char *value, size_t len)
{
	int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);

	if (fd < 0)
		die("open", path);
	if (write_all(fd, value, len) < 0)
		die("write", path);
	if (close(fd) < 0)
		die("close", path);
}

/* A new file DIR/N<i>, written and closed. */
static void create_once(const char *dir, long i, const char *value, size_t len)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/N%06ld", dir, i);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		die("create", path);
	if (write_all(fd, value, len) < 0)
		die("write", path);
	if (close(fd) < 0)
		die("close", path);
}

static bool file_is(const char *path, const char *value, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool ok = fd >= 0 && read_matches(fd, value, len);

	if (fd >= 0)
		close(fd);
	return ok;
}

/* The last value written to path reads back. */
static int check_written(const char *path, const char *value, size_t len)
{
	if (file_is(path, value, len))
		return 0;
	fprintf(stderr, "vbench: %s: the last value written does not read back\n", path);
	return 1;
}

/* DIR/N000000 .. count-1 each read back as value. */
static int check_created(const char *dir, long count, const char *value, size_t len)
{
	char path[4096];

	for (long i = 0; i < count; i++) {
		snprintf(path, sizeof(path), "%s/N%06ld", dir, i);
		if (!file_is(path, value, len)) {
			fprintf(stderr, "vbench: %s does not read back\n", path);
			return 1;
		}
	}
	return 0;
}

static int cmd_write(char **argv)
{
	long count = atol(argv[2]);
	char value[BUF_SIZE];
	size_t len = 0;
	double t0;

	t0 = now();
	for (long i = 0; i < count; i++) {
		len = value_of(value, sizeof(value), argv[1], i);
		write_once(argv[0], value, len);
	}
	t0 = now() - t0;
	if (check_written(argv[0], value, len))
		return 1;
	printf("%.1f\n", t0 * 1e6 / (double)count);
	return 0;
}

static int cmd_create(char **argv)
{
	long count = atol(argv[2]);
	size_t len = strlen(argv[1]);
	double t0;

	t0 = now();
	for (long i = 0; i < count; i++)
		create_once(argv[0], i, argv[1], len);
	t0 = now() - t0;
	if (check_created(argv[0], count, argv[1], len))
		return 1;
	printf("%.1f\n", t0 * 1e6 / (double)count);
	return 0;
}

static int durable_write(int dirfd, const char *target, const char *p, size_t len)
{
	int fd = openat(dirfd, ".vbench.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0)
		return -1;
	if (write_all(fd, p, len) < 0 || fsync(fd) < 0) {
		close(fd);
		return -1;
	}
	if (close(fd) < 0)
		return -1;
	return renameat(dirfd, ".vbench.tmp", dirfd, target);
}

static int open_dir(const char *path)
{
	int dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dirfd < 0)
		die("open", path);
	return dirfd;
}

static int cmd_fsync_rename(char **argv)
{
	long count = atol(argv[2]);
	char value[BUF_SIZE];
	double t0;
	int dirfd = open_dir(argv[0]);
	size_t len;

	t0 = now();
	for (long i = 0; i < count; i++) {
		len = value_of(value, sizeof(value), argv[1], i);
		if (durable_write(dirfd, "target", value, len) < 0)
			die("durable write in", argv[0]);
	}
	printf("%.1f\n", (now() - t0) * 1e6 / (double)count);
	close(dirfd);
	return 0;
}

static int cmd_paired(char **argv)
{
	bool create = !strcmp(argv[0], "create");
	const char *target = argv[1], *base = argv[2], *given = argv[3];
	long count = atol(argv[4]);
	char value[BUF_SIZE];
	double t, spent[2] = { 0, 0 };
	int dirfd;
	size_t len = 0;

	if (!create && strcmp(argv[0], "write"))
		return 2;
	dirfd = open_dir(base);
	for (long i = 0; i < count; i++) {
		len = create ? strlen(given) : value_of(value, sizeof(value), given, i);
		for (int k = 0; k < 2; k++) {
			bool ours = (k == 0) == (i % 2 == 0);

			t = now();
			if (ours && create)
				create_once(target, i, given, len);
			else if (ours)
				write_once(target, value, len);
			else if (durable_write(dirfd, "target", create ? given : value, len) < 0)
				die("durable write in", base);
			spent[ours ? 0 : 1] += now() - t;
		}
	}
	close(dirfd);
	if (create ? check_created(target, count, given, len) : check_written(target, value, len))
		return 1;
	printf("%.1f %.1f\n", spent[0] * 1e6 / (double)count, spent[1] * 1e6 / (double)count);
	return 0;
}

static int cmd_put(char **argv)
{
	char value[BUF_SIZE], dir[4096], *slash;
	ssize_t n = read(STDIN_FILENO, value, sizeof(value));
	int dirfd;

	snprintf(dir, sizeof(dir), "%s", argv[0]);
	slash = strrchr(dir, '/');
	if (n < 0 || !slash)
		return 2;
	*slash = '\0';
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0 || durable_write(dirfd, slash + 1, value, (size_t)n) < 0)
		die("durable write", argv[0]);
	return 0;
}

static void wait_line(void)
{
	char line[64];

	if (!fgets(line, sizeof(line), stdin))
		return;
}

static int cmd_hold(char **argv)
{
	long count = atol(argv[1]);
	struct rlimit rl = { (rlim_t)count + 64, (rlim_t)count + 64 };
	size_t len = strlen(argv[2]);
	char path[4096];
	int *fds = calloc((size_t)count, sizeof(int));

	if (!fds)
		return 1;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("setrlimit", "RLIMIT_NOFILE");
	for (long i = 0; i < count; i++) {
		snprintf(path, sizeof(path), "%s/K%06ld", argv[0], i);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			die("open", path);
		if (!read_matches(fds[i], argv[2], len)) {
			fprintf(stderr, "vbench: %s: wrong bytes\n", path);
			return 1;
		}
	}
	printf("open\n");
	fflush(stdout);
	wait_line();
	for (long i = 0; i < count; i++)
		close(fds[i]);
	printf("closed\n");
	fflush(stdout);
	wait_line();
	free(fds);
	return 0;
}

struct denier {
	pthread_t thread;
	const char *path;
	atomic_bool *stop;
	long tries, wrong;
};

static void *denier_main(void *arg)
{
	struct denier *d = arg;
	int fd;

	while (!atomic_load(d->stop)) {
		fd = open(d->path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			close(fd);
			d->wrong++;
		} else if (errno != EACCES) {
			d->wrong++;
		}
		d->tries++;
	}
	return NULL;
}

static int cmd_deny(char **argv)
{
	int nthreads = atoi(argv[1]);
	atomic_bool stop = false;
	struct denier *ds;
	long tries = 0, wrong = 0;

	ds = nthreads > 0 ? calloc((size_t)nthreads, sizeof(*ds)) : NULL;
	if (!ds)
		return 2;
	for (int i = 0; i < nthreads; i++) {
		ds[i] = (struct denier){ .path = argv[0], .stop = &stop };
		if (pthread_create(&ds[i].thread, NULL, denier_main, &ds[i]) != 0)
			return 1;
	}
	printf("started\n");
	fflush(stdout);
	wait_line();
	atomic_store(&stop, true);
	for (int i = 0; i < nthreads; i++) {
		pthread_join(ds[i].thread, NULL);
		tries += ds[i].tries;
		wrong += ds[i].wrong;
	}
	free(ds);
	if (wrong) {
		fprintf(stderr, "vbench: %s: %ld of %ld opens were not refused with EACCES\n",
			argv[0], wrong, tries);
		return 1;
	}
	printf("%ld\n", tries);
	return 0;
}

static const struct {
	const char *name;
	int nargs;
	int (*fn)(char **argv);
} cmds[] = {
	{ "read", 4, cmd_read },
	{ "lookup", 4, cmd_lookup },
	{ "write", 3, cmd_write },
	{ "create", 3, cmd_create },
	{ "fsync-rename", 3, cmd_fsync_rename },
	{ "paired", 5, cmd_paired },
	{ "put", 1, cmd_put },
	{ "hold", 3, cmd_hold },
	{ "deny", 2, cmd_deny },
};

int main(int argc, char **argv)
{
	for (size_t i = 0; argc >= 2 && i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name) && argc - 2 == cmds[i].nargs)
			return cmds[i].fn(argv + 2);
	fprintf(stderr, "usage: vbench read|lookup|write|create|fsync-rename|paired|put|hold|deny ARGS "
		"(see bench/vbench.c)\n");
	return 2;
}
