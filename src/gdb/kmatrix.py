# kmatrix's gdb helpers, sourced by `kmatrix debug` next to vmlinux-gdb.py.
import gdb


class KmxModuleSymbols(gdb.Command):
    """Load a module's symbols at all of its section addresses.

    kmx-module-symbols MOD FILE.ko

    MOD is an expression for the `struct module *` (e.g. `mod` when stopped
    in do_init_module). Unlike lx-symbols, which places only .text, .data,
    .rodata and .bss, this also places the init sections, so a breakpoint on
    the module's init function lands where the code really is."""

    def __init__(self):
        super().__init__("kmx-module-symbols", gdb.COMMAND_FILES)

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if len(argv) != 2:
            raise gdb.GdbError("usage: kmx-module-symbols MOD FILE.ko")
        mod = gdb.parse_and_eval(argv[0])
        sect_attrs = mod["sect_attrs"].dereference()
        attrs = sect_attrs["attrs"]
        sections = {}
        for n in range(int(sect_attrs["nsections"])):
            name = attrs[n]["battr"]["attr"]["name"].string()
            address = int(attrs[n]["address"])
            if address:
                sections[name] = address
        if not sections:
            raise gdb.GdbError("module has no loaded sections")
        # A module may have no .text at all (only __init/__exit code); gdb
        # then takes every section from -s.
        # Replace a copy lx-symbols loaded with only some sections placed.
        for objfile in gdb.objfiles():
            if objfile.filename and objfile.filename.endswith("/" + argv[1].split("/")[-1]):
                gdb.execute("remove-symbol-file {}".format(objfile.filename), to_string=True)
        text = "{:#x}".format(sections[".text"]) if ".text" in sections else ""
        extra = " ".join("-s {} {:#x}".format(n, a) for n, a in sections.items() if n != ".text")
        gdb.execute("add-symbol-file {} {} {}".format(argv[1], text, extra), to_string=not from_tty)
        print("loaded {} ({} sections)".format(argv[1], len(sections)))


KmxModuleSymbols()
