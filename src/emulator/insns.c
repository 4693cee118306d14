/*
 * kmatrix's QEMU TCG plugin: counts the guest instructions executed, in
 * all, and up to the first execution of one guest address (the init's
 * kmx_marker_reached(), called just before the boot marker).
 *
 * Debian ships QEMU with plugin support but no plugins and no
 * qemu-plugin.h, so the few declarations of the (stable, version 1) plugin
 * API used here are written out below. QEMU 7.2 accepts API versions 0..1.
 *
 * Arguments (-plugin file=insns.so,marker=0xADDR,bytes=HEX): both
 * optional. A guest address alone is ambiguous (a decompressor running with
 * the MMU off, or another process, may execute the same virtual address),
 * so the instruction bytes there must also match the marker function's
 * first bytes, as far as the translation block holds them.
 * Output, through qemu_plugin_outs (so QEMU needs -d plugin -D FILE):
 *   kmx-insns marker N     once, when the marker address first executes
 *   kmx-insns total N      at exit
 *
 * Counting is inline (one add per translation block, of its instruction
 * count), so a block that is left early by an exception still counts
 * whole: the figure is TCG's, repeatable to within the timer-interrupt
 * jitter of a real-time clock, not a hardware counter.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS = 0 };

#define EXPORT __attribute__((visibility("default")))

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t, struct qemu_plugin_tb *));
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, void (*cb)(unsigned int vcpu, void *udata), enum qemu_plugin_cb_flags flags, void *udata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t, void *), void *udata);
void qemu_plugin_outs(const char *s);

EXPORT int qemu_plugin_version = 1;

static uint64_t count;
static uint64_t marker;
static int have_marker, marker_seen;
static unsigned char want[32];
static size_t nwant;

/* Do the instructions from insn idx on start with the marker's bytes? */
static int bytes_match(struct qemu_plugin_tb *tb, size_t idx, size_t n)
{
	size_t at = 0;

	for (size_t i = idx; i < n && at < nwant; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		const unsigned char *d = qemu_plugin_insn_data(insn);
		size_t sz = qemu_plugin_insn_size(insn);
		for (size_t k = 0; k < sz && at < nwant; k++, at++)
			if (d[k] != want[at])
				return 0;
	}
	return 1;
}

static void at_marker(unsigned int vcpu, void *udata)
{
	char line[64];

	(void)vcpu;
	(void)udata;
	if (marker_seen)
		return;
	marker_seen = 1;
	snprintf(line, sizeof line, "kmx-insns marker %llu\n", (unsigned long long)count);
	qemu_plugin_outs(line);
}

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);

	(void)id;
	qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &count, n);
	if (!have_marker || marker_seen)
		return;
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		if (qemu_plugin_insn_vaddr(insn) == marker && bytes_match(tb, i, n))
			qemu_plugin_register_vcpu_insn_exec_cb(insn, at_marker, QEMU_PLUGIN_CB_NO_REGS, 0);
	}
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
	char line[64];

	(void)id;
	(void)udata;
	snprintf(line, sizeof line, "kmx-insns total %llu\n", (unsigned long long)count);
	qemu_plugin_outs(line);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv)
{
	(void)info;
	for (int i = 0; i < argc; i++) {
		if (!strncmp(argv[i], "marker=", 7)) {
			marker = strtoull(argv[i] + 7, 0, 0);
			have_marker = 1;
		} else if (!strncmp(argv[i], "bytes=", 6)) {
			const char *h = argv[i] + 6;
			for (nwant = 0; h[0] && h[1] && nwant < sizeof want; h += 2) {
				char two[3] = { h[0], h[1], 0 };
				want[nwant++] = (unsigned char)strtoul(two, 0, 16);
			}
		} else {
			fprintf(stderr, "kmatrix insns plugin: unknown argument %s\n", argv[i]);
			return -1;
		}
	}
	qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
	qemu_plugin_register_atexit_cb(id, at_exit, 0);
	return 0;
}
