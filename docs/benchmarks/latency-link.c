/*
 * A delay line between two TUN devices, for docs/benchmarks/latency.sh.
 *
 *   latency-link HOST_TUN NETNS_PATH NS_TUN DELAY_MS
 *
 * Attaches to the (persistent, already created) TUN device HOST_TUN in the
 * current network namespace and to NS_TUN in the namespace NETNS_PATH
 * (e.g. /var/run/netns/cairn-lat), then forwards every IP packet read from
 * one to the other after DELAY_MS milliseconds (one-way; 0 forwards at
 * once). Packets keep their order; a packet that finds its direction's queue
 * full (QUEUE_SLOTS packets, far above the bandwidth-delay product of any
 * link the script makes) is dropped, like a router's full queue.
 *
 * Why not `tc qdisc ... netem delay`: the kernel this was written on has no
 * sch_netem (and no module loading); tc's tbf/htb are there and do the rate
 * cap on the TUN devices' egress, before the packets reach this program.
 *
 * Runs until SIGTERM/SIGINT. Prints counters to stderr when it ends.
 * Build: cc -O2 -o latency-link latency-link.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define SLOT 2048          /* bytes per queued packet (MTU is 1500) */
#define QUEUE_SLOTS 16384  /* packets per direction */
#define BATCH 64           /* packets read per wake-up and direction */

struct queue {
	unsigned char *buf;       /* QUEUE_SLOTS * SLOT */
	uint16_t len[QUEUE_SLOTS];
	int64_t due[QUEUE_SLOTS]; /* ns, CLOCK_MONOTONIC */
	unsigned head, tail;      /* head: next to send; tail: next free */
	uint64_t fwd, dropped;
};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int tun_attach(const char *name)
{
	struct ifreq ifr;
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		perror("open /dev/net/tun");
		exit(1);
	}
	memset(&ifr, 0, sizeof ifr);
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		fprintf(stderr, "TUNSETIFF %s: %s\n", name, strerror(errno));
		exit(1);
	}
	return fd;
}

/* Read what is ready on `from` into `q`, due `delay` ns from now. */
static void fill(int from, struct queue *q, int64_t delay)
{
	for (int i = 0; i < BATCH; i++) {
		unsigned char scratch[SLOT];
		int full = q->tail - q->head >= QUEUE_SLOTS;
		unsigned char *dst = full ? scratch : q->buf + (size_t)(q->tail % QUEUE_SLOTS) * SLOT;
		ssize_t n = read(from, dst, SLOT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			perror("read");
			exit(1);
		}
		if (full) {
			q->dropped++;
			continue;
		}
		q->len[q->tail % QUEUE_SLOTS] = (uint16_t)n;
		q->due[q->tail % QUEUE_SLOTS] = now_ns() + delay;
		q->tail++;
	}
}

/* Write every packet of `q` that is due to `to`; return ns until the next
 * one is due (-1: queue empty). */
static int64_t drain(int to, struct queue *q)
{
	int64_t t = now_ns();
	while (q->head != q->tail) {
		unsigned i = q->head % QUEUE_SLOTS;
		if (q->due[i] > t)
			return q->due[i] - t;
		if (write(to, q->buf + (size_t)i * SLOT, q->len[i]) < 0 && errno != EAGAIN)
			q->dropped++; /* e.g. the device went down */
		else
			q->fwd++;
		q->head++;
	}
	return -1;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s HOST_TUN NETNS_PATH NS_TUN DELAY_MS\n", argv[0]);
		return 2;
	}
	int64_t delay = (int64_t)(atof(argv[4]) * 1e6);
	int host = tun_attach(argv[1]);
	int nsfd = open(argv[2], O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
		fprintf(stderr, "setns %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	int ns = tun_attach(argv[3]); /* opened inside the namespace */

	struct queue *up = calloc(1, sizeof *up), *down = calloc(1, sizeof *down);
	up->buf = malloc((size_t)QUEUE_SLOTS * SLOT);
	down->buf = malloc((size_t)QUEUE_SLOTS * SLOT);
	if (!up->buf || !down->buf) {
		perror("malloc");
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	struct pollfd fds[2] = {{.fd = host, .events = POLLIN}, {.fd = ns, .events = POLLIN}};
	while (!stop) {
		int64_t a = drain(ns, up), b = drain(host, down), wait = -1;
		if (a >= 0)
			wait = a;
		if (b >= 0 && (wait < 0 || b < wait))
			wait = b;
		struct timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
		int r = ppoll(fds, 2, wait < 0 ? NULL : &ts, NULL);
		if (r < 0 && errno != EINTR) {
			perror("ppoll");
			return 1;
		}
		if (r > 0) {
			if (fds[0].revents & POLLIN)
				fill(host, up, delay);
			if (fds[1].revents & POLLIN)
				fill(ns, down, delay);
		}
	}
	fprintf(stderr, "latency-link: host->ns %llu forwarded %llu dropped; ns->host %llu forwarded %llu dropped\n",
		(unsigned long long)up->fwd, (unsigned long long)up->dropped,
		(unsigned long long)down->fwd, (unsigned long long)down->dropped);
	return 0;
}
