/*
 * kmatrix's guest init: the first and only process of a check boot.
 *
 * It mounts proc, sysfs and devtmpfs, prints the boot marker, runs the
 * requested commands (through /bin/sh when the rootfs has one, else split on
 * spaces and exec'd directly), reports each exit status, and ends the machine
 * the board's way. Its configuration is /kmatrix.conf, written by kmatrix
 * into the initramfs:
 *
 *   nonce=<hex>          printed with every marker, so no stale or echoed
 *                        text can pass for this boot's marker
 *   poweroff=poweroff|reboot|m5-exit
 *   cmd=<command>        repeatable, run in order
 *   shell=1              after the commands, exec an interactive shell
 *
 * Markers (one line each, parsed by the host):
 *   KMATRIX-BOOT-OK nonce=N machine=M release=R
 *   KMATRIX-CMD-BEGIN i nonce=N
 *   KMATRIX-CMD-END i status=S nonce=N
 *   KMATRIX-DONE nonce=N
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CMDS 64

static char nonce[128] = "none";
static char poweroff_mode[32] = "poweroff";
static char *cmds[MAX_CMDS];
static int ncmds;
static int want_shell;

static void load_config(void)
{
	FILE *f = fopen("/kmatrix.conf", "r");
	char line[4096];

	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "nonce=", 6))
			snprintf(nonce, sizeof nonce, "%s", line + 6);
		else if (!strncmp(line, "poweroff=", 9))
			snprintf(poweroff_mode, sizeof poweroff_mode, "%s", line + 9);
		else if (!strncmp(line, "cmd=", 4) && ncmds < MAX_CMDS)
			cmds[ncmds++] = strdup(line + 4);
		else if (!strcmp(line, "shell=1"))
			want_shell = 1;
	}
	fclose(f);
}

/* gem5's "m5 exit" pseudo-instruction (M5OP_EXIT = 0x21), delay 0. */
static void m5_exit(void)
{
#if defined(__aarch64__)
	__asm__ volatile("mov x0, #0\n\t.inst 0xff000110 | (0x21 << 16)" ::: "x0", "memory");
#elif defined(__x86_64__)
	__asm__ volatile("xor %%edi, %%edi\n\t.byte 0x0f, 0x04\n\t.word 0x21" ::: "rdi", "memory");
#endif
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

int main(void)
{
	struct utsname u;

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
	uname(&u);
	printf("KMATRIX-BOOT-OK nonce=%s machine=%s release=%s\n", nonce, u.machine, u.release);
	fflush(stdout);

	for (int i = 0; i < ncmds; i++) {
		printf("KMATRIX-CMD-BEGIN %d nonce=%s\n", i, nonce);
		fflush(stdout);
		int st = run(cmds[i]);
		fflush(stdout);
		printf("\nKMATRIX-CMD-END %d status=%d nonce=%s\n", i, st, nonce);
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
