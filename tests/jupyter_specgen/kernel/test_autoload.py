"""Auto-loading the kernel extension through the server's kernel spec manager."""

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

from jupyter_specgen.kernel.autoload import EXTENSION_ARGUMENT, install, with_extension


def test_ipykernel_specs_get_the_extension_once_and_others_are_untouched():
    """install() adds the extension argument to ipykernel specs, idempotently; other kernels keep their argv."""
    ksm = KernelSpecManager()
    install(ksm)
    install(ksm)
    argv = ksm.get_kernel_spec("python3").argv
    assert argv.count(EXTENSION_ARGUMENT) == 1 and argv[-1] == EXTENSION_ARGUMENT
    r_spec = KernelSpec(argv=["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"], language="R")
    assert with_extension(r_spec) is r_spec
