/*
 * kmatrix's guest init: the first and only process of a check boot.
 *
 * It mounts proc, sysfs and devtmpfs, prints the boot marker, runs the
 * requested commands (through /bin/sh when the rootfs has one, else split on
 * spaces and exec'd directly), reports each exit status, and ends the machine
 * the board's way. Its configuration is /kmatrix.conf, written by kmatrix
 * into the initramfs, or, for a disk root, on a conf disk (below), so one
 * image serves every boot:
 *
 *   nonce=<hex>          printed with every marker, so no stale or echoed
 *                        text can pass for this boot's marker
 *   poweroff=poweroff|reboot|m5-exit
 *   cmd=<command>        repeatable, run in order
 *   shell=1              after the commands, exec an interactive shell
 *   readfile=1           (gem5) the rest of the configuration comes from the
 *                        host through gem5's `m5 readfile`: a kernel with
 *                        the initramfs linked in is built once and each boot
 *                        still gets its own nonce and commands
 *   checkpoint=1         (gem5) after the boot marker, ask gem5 for a
 *                        checkpoint, then read the configuration again with
 *                        `m5 readfile`: a restored run gets the restoring
 *                        boot's nonce and commands
 *   share=<tag> <dir>    repeatable: mount the 9p share <tag> at <dir>
 *   net=<ip>/<len> <gw>  bring up lo and eth0 with a static address and a
 *                        default route (QEMU's user-mode network)
 *   snapshot=1           (QEMU) after the commands, print
 *                        KMATRIX-SNAPSHOT-READY and wait for a newer
 *                        configuration on a block device ("conf disk",
 *                        starting "KMATRIX-CONF\n", with gen=<n> higher
 *                        than this one's): the host saves the machine while
 *                        it waits, and a boot that loads that snapshot hands
 *                        the waiting init its own nonce and commands
 *   gen=<n>              the configuration's generation (conf disks)
 *
 * The lab setup (shares, network) runs before the boot marker, and also as
 * `/init --lab` from busybox's rcS in interactive boots. Each step prints
 * `KMATRIX-LAB <what> ok|failed: <why>`.
 *
 * Guests without busybox (Debian has none for big-endian mips64) still get
 * a few tools, as `/init kmx <tool> ...` (also a `--cmd` without a shell):
 *   kmx cat FILE             print a file
 *   kmx write FILE TEXT...   write the words and a newline to FILE
 *   kmx get IP PORT          HTTP/1.0 GET / and print the reply
 *   kmx serve PORT TEXT...   accept one TCP connection, send the words
 *
 * Markers (one line each, parsed by the host):
 *   KMATRIX-BOOT-OK nonce=N machine=M release=R
 *   KMATRIX-CMD-BEGIN i nonce=N
 *   KMATRIX-CMD-END i status=S nonce=N
 *   KMATRIX-DONE nonce=N
 */
#define _GNU_SOURCE /* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CMDS 64
#define MAX_SHARES 8

static char nonce[128] = "none";
static char poweroff_mode[32] = "poweroff";
static char *cmds[MAX_CMDS];
static int ncmds;
static int want_shell;
static int want_readfile;
static int want_checkpoint;
static char *shares[MAX_SHARES];
static int nshares;
static char net[128];
static int want_snapshot;
static long gen;

/*
 * gem5 pseudo-instructions (include/gem5/asm/generic/m5ops.h): EXIT 0x21,
 * CHECKPOINT 0x43, READ_FILE 0x50. Arguments in x0.. / rdi, rsi, rdx; the
 * result in x0 / rax. Only ever executed on gem5: elsewhere they fault.
 */
#if defined(__aarch64__)
#define M5OP(func, a, b, c, ret)                                                    \
	do {                                                                        \
		register unsigned long x0 __asm__("x0") = (a);                      \
		register unsigned long x1 __asm__("x1") = (b);                      \
		register unsigned long x2 __asm__("x2") = (c);                      \
		__asm__ volatile(".inst 0xff000110 | (" #func " << 16)"             \
				 : "+r"(x0) : "r"(x1), "r"(x2) : "memory");         \
		(ret) = x0;                                                         \
	} while (0)
#define HAVE_M5OPS 1
#elif defined(__x86_64__)
#define M5OP(func, a, b, c, ret)                                                    \
	do {                                                                        \
		unsigned long rax;                                                  \
		__asm__ volatile(".byte 0x0f, 0x04\n\t.word " #func                 \
				 : "=a"(rax) : "D"(a), "S"(b), "d"(c) : "memory");   \
		(ret) = rax;                                                        \
	} while (0)
#define HAVE_M5OPS 1
#else
#define M5OP(func, a, b, c, ret) ((ret) = 0)
#define HAVE_M5OPS 0
#endif

static void parse_config(char *text)
{
	for (char *line = strtok(text, "\n"); line; line = strtok(0, "\n")) {
		if (!strncmp(line, "nonce=", 6))
			snprintf(nonce, sizeof nonce, "%s", line + 6);
		else if (!strncmp(line, "poweroff=", 9))
			snprintf(poweroff_mode, sizeof poweroff_mode, "%s", line + 9);
		else if (!strncmp(line, "cmd=", 4) && ncmds < MAX_CMDS)
			cmds[ncmds++] = strdup(line + 4);
		else if (!strcmp(line, "shell=1"))
			want_shell = 1;
		else if (!strcmp(line, "readfile=1"))
			want_readfile = 1;
		else if (!strcmp(line, "checkpoint=1"))
			want_checkpoint = 1;
		else if (!strncmp(line, "share=", 6) && nshares < MAX_SHARES)
			shares[nshares++] = strdup(line + 6);
		else if (!strncmp(line, "net=", 4))
			snprintf(net, sizeof net, "%s", line + 4);
		else if (!strcmp(line, "snapshot=1"))
			want_snapshot = 1;
		else if (!strncmp(line, "gen=", 4))
			gen = strtol(line + 4, 0, 10);
	}
}

static void mkdirs(const char *path)
{
	char p[256];
	snprintf(p, sizeof p, "%s", path);
	for (char *s = p + 1; *s; s++)
		if (*s == '/') {
			*s = 0;
			mkdir(p, 0755);
			*s = '/';
		}
	mkdir(p, 0755);
}

static void mount_share(const char *spec)
{
	char tag[64], dir[192];
	if (sscanf(spec, "%63s %191s", tag, dir) != 2) {
		printf("KMATRIX-LAB share %s failed: bad spec\n", spec);
		return;
	}
	mkdirs(dir);
	/* msize 500 KiB (virtio's maximum): the 8 KiB default makes every read a round trip. */
	if (mount(tag, dir, "9p", 0, "trans=virtio,version=9p2000.L,msize=512000") == 0)
		printf("KMATRIX-LAB share %s %s ok\n", tag, dir);
	else
		printf("KMATRIX-LAB share %s %s failed: %s\n", tag, dir, strerror(errno));
}

static int if_up(int s, const char *name, const char *ip, int len)
{
	struct ifreq ifr;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;

	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ip) {
		sin->sin_family = AF_INET;
		if (inet_pton(AF_INET, ip, &sin->sin_addr) != 1 || ioctl(s, SIOCSIFADDR, &ifr) < 0)
			return -1;
		sin->sin_addr.s_addr = htonl(len ? 0xffffffffu << (32 - len) : 0);
		if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
			return -1;
	}
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return -1;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	return ioctl(s, SIOCSIFFLAGS, &ifr);
}

/* No busybox needed: ioctls set the address, as `ip addr add` would. */
static void net_up(const char *spec)
{
	char ip[64], gw[64];
	int len = 24;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct rtentry rt;

	if (sscanf(spec, "%63[^/]/%d %63s", ip, &len, gw) != 3 || len < 0 || len > 32) {
		printf("KMATRIX-LAB net %s failed: bad spec\n", spec);
		return;
	}
	if (s < 0 || if_up(s, "lo", "127.0.0.1", 8) < 0 || if_up(s, "eth0", ip, len) < 0) {
		printf("KMATRIX-LAB net eth0 failed: %s\n", strerror(errno));
		if (s >= 0)
			close(s);
		return;
	}
	memset(&rt, 0, sizeof rt);
	((struct sockaddr_in *)&rt.rt_dst)->sin_family = AF_INET;
	((struct sockaddr_in *)&rt.rt_genmask)->sin_family = AF_INET;
	((struct sockaddr_in *)&rt.rt_gateway)->sin_family = AF_INET;
	inet_pton(AF_INET, gw, &((struct sockaddr_in *)&rt.rt_gateway)->sin_addr);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	if (ioctl(s, SIOCADDRT, &rt) < 0)
		printf("KMATRIX-LAB net eth0 failed: route via %s: %s\n", gw, strerror(errno));
	else
		printf("KMATRIX-LAB net eth0 %s/%d via %s ok\n", ip, len, gw);
	close(s);
}

static int tool(int argc, char **argv)
{
	char buf[4096];
	ssize_t n;

	if (argc >= 2 && !strcmp(argv[0], "cat")) {
		int fd = open(argv[1], O_RDONLY);
		if (fd < 0) {
			fprintf(stderr, "kmx cat: %s: %s\n", argv[1], strerror(errno));
			return 1;
		}
		while ((n = read(fd, buf, sizeof buf)) > 0)
			fwrite(buf, 1, n, stdout);
		close(fd);
		return 0;
	}
	if (argc >= 2 && !strcmp(argv[0], "write")) {
		FILE *f = fopen(argv[1], "w");
		if (!f) {
			fprintf(stderr, "kmx write: %s: %s\n", argv[1], strerror(errno));
			return 1;
		}
		for (int i = 2; i < argc; i++)
			fprintf(f, "%s%s", argv[i], i + 1 < argc ? " " : "");
		fputc('\n', f);
		return fclose(f) ? 1 : 0;
	}
	if (argc >= 3 && (!strcmp(argv[0], "get") || !strcmp(argv[0], "serve"))) {
		int serve = !strcmp(argv[0], "serve");
		struct sockaddr_in a = { .sin_family = AF_INET };
		int s = socket(AF_INET, SOCK_STREAM, 0), c = -1, one = 1;
		a.sin_port = htons(atoi(serve ? argv[1] : argv[2]));
		if (serve) {
			setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
			if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 1) < 0 || (c = accept(s, 0, 0)) < 0) {
				fprintf(stderr, "kmx serve: %s\n", strerror(errno));
				return 1;
			}
			for (int i = 2; i < argc; i++) {
				dprintf(c, "%s%s", argv[i], i + 1 < argc ? " " : "");
			}
			dprintf(c, "\n");
			close(c);
			close(s);
			return 0;
		}
		if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
			fprintf(stderr, "kmx get: %s:%s: %s\n", argv[1], argv[2], strerror(errno));
			return 1;
		}
		dprintf(s, "GET / HTTP/1.0\r\n\r\n");
		while ((n = read(s, buf, sizeof buf)) > 0)
			fwrite(buf, 1, n, stdout);
		close(s);
		return 0;
	}
	fprintf(stderr, "kmx: unknown tool or missing arguments (cat FILE, write FILE TEXT, get IP PORT, serve PORT TEXT)\n");
	return 2;
}

static void lab_setup(void)
{
	for (int i = 0; i < nshares; i++)
		mount_share(shares[i]);
	if (net[0])
		net_up(net);
	fflush(stdout);
}

/*
 * A configuration newer than `gen` on a conf disk, read with O_DIRECT so
 * the page cache never hands back what an earlier read saw (the host
 * rewrites the file while the guest waits, and a restored guest's cache is
 * the saved one's). Returns 1 and reparses when one is found.
 */
static int newer_conf_disk(void)
{
	static char *buf;
	char dev[32];

	if (!buf && posix_memalign((void **)&buf, 4096, 4096))
		return 0;
	for (char c = 'a'; c <= 'z'; c++) {
		snprintf(dev, sizeof dev, "/dev/vd%c", c);
		int fd = open(dev, O_RDONLY | O_DIRECT);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, 4096);
		close(fd);
		if (n != 4096 || strncmp(buf, "KMATRIX-CONF\n", 13))
			continue;
		buf[4095] = 0;
		char *g = strstr(buf, "\ngen=");
		if (!g || strtol(g + 5, 0, 10) <= gen)
			continue;
		for (int i = 0; i < ncmds; i++)
			free(cmds[i]);
		ncmds = 0;
		want_snapshot = 0;
		static char text[4096];
		memcpy(text, buf + 13, sizeof text - 13);
		text[sizeof text - 14] = 0;
		parse_config(text);
		return 1;
	}
	return 0;
}

static void load_config(void)
{
	static char text[65536];
	int fd = open("/kmatrix.conf", O_RDONLY);
	ssize_t n;

	if (fd < 0) {
		/* A disk root: the configuration is on a conf disk. */
		newer_conf_disk();
		return;
	}
	n = read(fd, text, sizeof text - 1);
	close(fd);
	if (n > 0) {
		text[n] = 0;
		parse_config(text);
	}
}

/* The host's configuration file through `m5 readfile`; 0 when there is none. */
static int load_readfile(void)
{
	static char text[65536];
	unsigned long got = 0, n;

	if (!HAVE_M5OPS)
		return 0;
	/* gem5 writes through the guest's page tables: fault the pages in. */
	memset(text, 0, sizeof text);
	do {
		M5OP(0x50, (unsigned long)(text + got), sizeof text - 1 - got, got, n);
		got += n;
	} while (n > 0 && got < sizeof text - 1);
	if (!got)
		return 0;
	text[got] = 0;
	for (int i = 0; i < ncmds; i++)
		free(cmds[i]);
	ncmds = 0;
	want_checkpoint = 0;
	parse_config(text);
	return 1;
}

static void m5_exit(void)
{
	unsigned long r;
	M5OP(0x21, 0, 0, 0, r);
	(void)r;
}

static void m5_checkpoint(void)
{
	unsigned long r;
	M5OP(0x43, 0, 0, 0, r);
	(void)r;
}

static void finish(void)
{
	sync();
	if (!strcmp(poweroff_mode, "m5-exit"))
		m5_exit();
	if (!strcmp(poweroff_mode, "reboot"))
		reboot(RB_AUTOBOOT);
	reboot(RB_POWER_OFF);
	/* Still here: the platform could not stop. The host times out. */
	for (;;)
		pause();
}

static int run(const char *cmd)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return 127;
	if (pid == 0) {
		if (access("/bin/sh", X_OK) == 0) {
			execl("/bin/sh", "sh", "-c", cmd, (char *)0);
		} else {
			char *copy = strdup(cmd), *argv[64];
			int n = 0;
			for (char *t = strtok(copy, " \t"); t && n < 63; t = strtok(0, " \t"))
				argv[n++] = t;
			argv[n] = 0;
			if (n)
				execvp(argv[0], argv);
		}
		fprintf(stderr, "kmatrix-init: cannot run '%s': %s\n", cmd, strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

/* Called once, just before the boot marker. `--count-insns` hands its
 * address (from this binary's symbol table: the init is linked without
 * PIE and not stripped) to the emulator's counter, so "instructions to
 * the marker" ends at one exact guest instruction. */
volatile unsigned kmx_marker_word;

__attribute__((noinline, used)) void kmx_marker_reached(void)
{
	/* A store of an odd constant: first bytes unlike other code at the
	 * same address (the counter matches the bytes as well). */
	kmx_marker_word = 0x4b4d5821;
}

int main(int argc, char **argv)
{
	struct utsname u;

	/* Interactive boots run busybox init, whose inittab calls
	 * `/init --shutdown` on poweroff and reboot: on gem5 the machine only
	 * halts (no ACPI power-off), so the simulation is ended here. */
	if (argc > 2 && !strcmp(argv[1], "kmx"))
		return tool(argc - 2, argv + 2);
	if (argc > 1 && !strcmp(argv[1], "--lab")) {
		load_config();
		lab_setup();
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "--shutdown")) {
		load_config();
		if (!strcmp(poweroff_mode, "m5-exit")) {
			sync();
			m5_exit();
		}
		return 0;
	}

	mkdir("/proc", 0555);
	mkdir("/sys", 0555);
	mkdir("/dev", 0755);
	mkdir("/tmp", 01777);
	mount("proc", "/proc", "proc", 0, 0);
	mount("sysfs", "/sys", "sysfs", 0, 0);
	/* CONFIG_DEVTMPFS_MOUNT does not apply to an initramfs. */
	mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
	setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", 1);
	setenv("HOME", "/root", 1);
	setvbuf(stdout, 0, _IOLBF, 0);

	load_config();
	if (want_readfile)
		load_readfile();
	lab_setup();
	uname(&u);
	kmx_marker_reached();
	printf("KMATRIX-BOOT-OK nonce=%s machine=%s release=%s\n", nonce, u.machine, u.release);
	fflush(stdout);
	if (want_checkpoint) {
		m5_checkpoint();
		/* Both the run that took the checkpoint and every restore of it
		 * continue here; a restore brings its own readfile. */
		if (load_readfile()) {
			printf("KMATRIX-BOOT-OK nonce=%s machine=%s release=%s restored\n", nonce, u.machine, u.release);
			fflush(stdout);
		}
	}

	for (;;) {
		for (int i = 0; i < ncmds; i++) {
			printf("KMATRIX-CMD-BEGIN %d nonce=%s\n", i, nonce);
			fflush(stdout);
			int st = run(cmds[i]);
			fflush(stdout);
			printf("\nKMATRIX-CMD-END %d status=%d nonce=%s\n", i, st, nonce);
			fflush(stdout);
		}
		if (!want_snapshot)
			break;
		sync();
		printf("KMATRIX-SNAPSHOT-READY nonce=%s\n", nonce);
		fflush(stdout);
		while (!newer_conf_disk())
			usleep(200 * 1000);
		printf("KMATRIX-BOOT-OK nonce=%s machine=%s release=%s restored\n", nonce, u.machine, u.release);
		fflush(stdout);
	}
	if (want_shell && access("/bin/sh", X_OK) == 0) {
		run("exec /bin/sh -l");
	}
	printf("KMATRIX-DONE nonce=%s\n", nonce);
	fflush(stdout);
	finish();
	return 0;
}
