/* The signal handler only writes a byte to a pipe; a thread of our own does
 * the reload, outside any FUSE request. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "reload.h"
#include "thread.h"
#include "vault.h"

static int pipe_fds[2] = { -1, -1 };
static pthread_t thread;
static bool running;
static atomic_bool stopping;
static struct sigaction old_hup;

static void on_hup(int sig)
{
	int saved = errno;
	char c = 'h';

	(void)sig;
	if (write(pipe_fds[1], &c, 1) < 0) {
		/* a reload is pending already */
	}
	errno = saved;
}

static void *reload_thread(void *arg)
{
	struct vault *v = arg;
	char c, err[512];
	ssize_t n;

	for (;;) {
		n = read(pipe_fds[0], &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || atomic_load(&stopping))
			break;
		if (vault_reload_key(v, err, sizeof(err)) == 0)
			log_info("SIGHUP: master key reloaded, data keys will be unwrapped again");
		else
			log_warn("SIGHUP: keeping the key in use: %s", err);
	}
	return NULL;
}

int reload_start(struct vault *v)
{
	struct sigaction sa;
	int r;

	if (pipe2(pipe_fds, O_CLOEXEC) < 0)
		return -errno;
	fcntl(pipe_fds[1], F_SETFL, O_NONBLOCK);
	r = thread_start(&thread, "vaultfs-reload", reload_thread, v);
	if (r < 0) {
		close(pipe_fds[0]);
		close(pipe_fds[1]);
		pipe_fds[0] = pipe_fds[1] = -1;
		return r;
	}
	running = true;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_hup;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGHUP, &sa, &old_hup);
	return 0;
}

void reload_stop(void)
{
	char c = 'q';

	if (!running)
		return;
	sigaction(SIGHUP, &old_hup, NULL);
	atomic_store(&stopping, true);
	/* If the pipe is full, the thread sees `stopping` as it drains it. */
	while (write(pipe_fds[1], &c, 1) < 0 && errno == EINTR)
		;
	pthread_join(thread, NULL);
	close(pipe_fds[0]);
	close(pipe_fds[1]);
	pipe_fds[0] = pipe_fds[1] = -1;
	running = false;
	atomic_store(&stopping, false);
}
