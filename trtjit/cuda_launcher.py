"""Launching stored cubins through the CUDA driver: no C compiler, no Triton JIT, no Triton cache.

An engine built with ``targets=[...]`` holds, per kernel and arch, the cubin Triton compiled and its launch
metadata (``trtjit.crosscompile.KernelBinary``). On a GPU of one of those archs the engine loads each cubin
with ``cuModuleLoadData``, finds its function with ``cuModuleGetFunction``, raises the dynamic shared
memory limit with ``cuFuncSetAttribute`` where a kernel needs more than 48 KB, and launches it with
``cuLaunchKernel`` on the current torch stream, or with ``cuLaunchKernelEx`` and the programmatic stream
serialization attribute (programmatic dependent launch, sm_90+) for kernels compiled with the PDL prologue
(``trtjit.codegen.common.PDL``): such a kernel's blocks are scheduled while the previous kernel's last wave
drains, and wait in ``griddepcontrol.wait`` until its writes are visible. The parameters are the kernel's non-constexpr arguments
(device pointers, in order) followed by two scratch pointers (global, profile), null unless the metadata
asks for scratch, in which case the launcher allocates it.

The driver is reached through NVIDIA's ``cuda-bindings`` (``from cuda.bindings import driver``); where that
package is missing, through ``ctypes`` on ``libcuda.so.1`` (set ``DRIVER`` to pick one). Every driver call's
return code is checked; a failure raises EngineError naming the call and the kernel.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

import torch

from trtjit.errors import EngineError

DRIVER = "auto"  # "auto" (cuda-bindings, else ctypes), "cuda-bindings" or "ctypes"

# (enum member name, value) of the driver attributes used
CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = ("CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES", 1)
CU_FUNC_ATTRIBUTE_NUM_REGS = ("CU_FUNC_ATTRIBUTE_NUM_REGS", 4)
CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = ("CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES", 8)
CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = ("CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN", 97)
CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = ("CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION", 6)
_SMEM_DEFAULT_LIMIT = 48 * 1024
POINTER_ALIGN = 16  # kernels were compiled assuming 16-byte aligned pointers (tt.divisibility=16)


def current_arch(device: torch.device | int | None = None) -> str | None:
    """``"sm_90"`` for the current (or given) CUDA device; None when kernels run on the interpreter."""
    from trtjit.backend import interpreting

    if interpreting() or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


# ---------------------------------------------------------------------------------------------- drivers
class _Driver:
    name = ""

    def check(self, call: str, kernel: str, err: Any) -> None:
        code = int(err)
        if code != 0:
            raise EngineError(f"CUDA driver call {call} failed for kernel {kernel!r}: {self.error_name(err)} "
                              f"(code {code})")

    def error_name(self, err: Any) -> str:
        return "CUDA error"


class _BindingsDriver(_Driver):
    name = "cuda-bindings"

    def __init__(self) -> None:
        from cuda.bindings import driver  # noqa: F401  (ImportError when the package is missing)

        self.d = driver

    def _call(self, call: str, kernel: str, *args: Any) -> Any:
        res = getattr(self.d, call)(*args)
        err, rest = (res[0], res[1:]) if isinstance(res, tuple) else (res, ())
        self.check(call, kernel, err)
        return rest[0] if len(rest) == 1 else rest

    def error_name(self, err: Any) -> str:
        try:
            e, name = self.d.cuGetErrorName(err)
            return name.decode() if int(e) == 0 and name else "CUDA error"
        except Exception:  # an error while naming an error must not hide the first one
            return "CUDA error"

    def init(self, ordinal: int, kernel: str) -> None:
        self._call("cuInit", kernel, 0)
        ctx = self._call("cuCtxGetCurrent", kernel)
        if ctx is None or int(ctx) == 0:
            dev = self._call("cuDeviceGet", kernel, ordinal)
            ctx = self._call("cuDevicePrimaryCtxRetain", kernel, dev)
            self._call("cuCtxSetCurrent", kernel, ctx)

    def load(self, image: bytes, kernel: str) -> Any:
        buf = ctypes.create_string_buffer(image, len(image))
        return self._call("cuModuleLoadData", kernel, ctypes.addressof(buf))

    def function(self, module: Any, symbol: str, kernel: str) -> Any:
        return self._call("cuModuleGetFunction", kernel, module, symbol.encode())

    def func_attr(self, fn: Any, attr: tuple[str, int], kernel: str) -> int:
        return int(self._call("cuFuncGetAttribute", kernel, getattr(self.d.CUfunction_attribute, attr[0]), fn))

    def set_func_attr(self, fn: Any, attr: tuple[str, int], value: int, kernel: str) -> None:
        self._call("cuFuncSetAttribute", kernel, fn, getattr(self.d.CUfunction_attribute, attr[0]), value)

    def device_attr(self, ordinal: int, attr: tuple[str, int], kernel: str) -> int:
        dev = self._call("cuDeviceGet", kernel, ordinal)
        return int(self._call("cuDeviceGetAttribute", kernel, getattr(self.d.CUdevice_attribute, attr[0]), dev))

    def launch(self, fn: Any, grid: Sequence[int], threads: int, shared: int, stream: int, params: int,
               kernel: str, pdl: bool = False) -> None:
        if not pdl:
            self._call("cuLaunchKernel", kernel, fn, grid[0], grid[1], grid[2], threads, 1, 1, shared, stream,
                       params, 0)
            return
        d = self.d
        cfg = d.CUlaunchConfig()
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = grid[0], grid[1], grid[2]
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = threads, 1, 1
        cfg.sharedMemBytes = shared
        cfg.hStream = d.CUstream(stream)
        attr = d.CUlaunchAttribute()
        attr.id = getattr(d.CUlaunchAttributeID, CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION[0])
        attr.value.programmaticStreamSerializationAllowed = 1
        cfg.attrs = [attr]
        cfg.numAttrs = 1
        self._call("cuLaunchKernelEx", kernel, cfg, fn, params, 0)

    def unload(self, module: Any) -> None:
        try:
            self.d.cuModuleUnload(module)
        except Exception:
            pass


class _LaunchAttribute(ctypes.Structure):
    """CUlaunchAttribute: a 4-byte id, padding to 8, a 64-byte value union (cuda.h)."""

    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_char * 64)]


class _LaunchConfig(ctypes.Structure):
    """CUlaunchConfig (cuda.h)."""

    _fields_ = [("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint), ("gridDimZ", ctypes.c_uint),
                ("blockDimX", ctypes.c_uint), ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
                ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(_LaunchAttribute)), ("numAttrs", ctypes.c_uint)]


def pdl_launch_config(grid: Sequence[int], threads: int, shared: int, stream: int) -> tuple[_LaunchConfig, Any]:
    """A CUlaunchConfig asking for programmatic stream serialization, and the attribute array it points to
    (keep both alive until the launch returns)."""
    attr = (_LaunchAttribute * 1)()
    attr[0].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION[1]
    ctypes.c_int.from_buffer(attr[0], _LaunchAttribute.value.offset).value = 1  # programmaticStreamSerializationAllowed
    cfg = _LaunchConfig(grid[0], grid[1], grid[2], threads, 1, 1, shared, ctypes.c_void_p(stream),
                        ctypes.cast(attr, ctypes.POINTER(_LaunchAttribute)), 1)
    return cfg, attr


class _CtypesDriver(_Driver):
    name = "ctypes"

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise EngineError(f"cannot load the CUDA driver library libcuda.so.1: {e}") from None
        c, vp, i, u, p = ctypes, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER
        sigs = {"cuInit": [u], "cuCtxGetCurrent": [p(vp)], "cuDeviceGet": [p(i), i],
                "cuDevicePrimaryCtxRetain": [p(vp), i], "cuCtxSetCurrent": [vp],
                "cuModuleLoadData": [p(vp), c.c_char_p], "cuModuleGetFunction": [p(vp), vp, c.c_char_p],
                "cuFuncGetAttribute": [p(i), i, vp], "cuFuncSetAttribute": [vp, i, i],
                "cuDeviceGetAttribute": [p(i), i, i], "cuModuleUnload": [vp],
                "cuLaunchKernel": [vp, u, u, u, u, u, u, u, vp, vp, vp],
                "cuLaunchKernelEx": [p(_LaunchConfig), vp, vp, vp],
                "cuGetErrorName": [i, p(c.c_char_p)]}
        for name, args in sigs.items():
            f = getattr(self.lib, name)
            f.argtypes, f.restype = args, ctypes.c_int

    def _call(self, call: str, kernel: str, *args: Any) -> None:
        self.check(call, kernel, getattr(self.lib, call)(*args))

    def error_name(self, err: Any) -> str:
        s = ctypes.c_char_p()
        return s.value.decode() if self.lib.cuGetErrorName(int(err), ctypes.byref(s)) == 0 and s.value else "CUDA error"

    def init(self, ordinal: int, kernel: str) -> None:
        self._call("cuInit", kernel, 0)
        ctx = ctypes.c_void_p()
        self._call("cuCtxGetCurrent", kernel, ctypes.byref(ctx))
        if not ctx.value:
            dev = ctypes.c_int()
            self._call("cuDeviceGet", kernel, ctypes.byref(dev), ordinal)
            self._call("cuDevicePrimaryCtxRetain", kernel, ctypes.byref(ctx), dev)
            self._call("cuCtxSetCurrent", kernel, ctx)

    def load(self, image: bytes, kernel: str) -> Any:
        mod = ctypes.c_void_p()
        self._call("cuModuleLoadData", kernel, ctypes.byref(mod), image)
        return mod

    def function(self, module: Any, symbol: str, kernel: str) -> Any:
        fn = ctypes.c_void_p()
        self._call("cuModuleGetFunction", kernel, ctypes.byref(fn), module, symbol.encode())
        return fn

    def func_attr(self, fn: Any, attr: tuple[str, int], kernel: str) -> int:
        v = ctypes.c_int()
        self._call("cuFuncGetAttribute", kernel, ctypes.byref(v), attr[1], fn)
        return v.value

    def set_func_attr(self, fn: Any, attr: tuple[str, int], value: int, kernel: str) -> None:
        self._call("cuFuncSetAttribute", kernel, fn, attr[1], value)

    def device_attr(self, ordinal: int, attr: tuple[str, int], kernel: str) -> int:
        dev, v = ctypes.c_int(), ctypes.c_int()
        self._call("cuDeviceGet", kernel, ctypes.byref(dev), ordinal)
        self._call("cuDeviceGetAttribute", kernel, ctypes.byref(v), attr[1], dev)
        return v.value

    def launch(self, fn: Any, grid: Sequence[int], threads: int, shared: int, stream: int, params: int,
               kernel: str, pdl: bool = False) -> None:
        if not pdl:
            self._call("cuLaunchKernel", kernel, fn, grid[0], grid[1], grid[2], threads, 1, 1, shared,
                       ctypes.c_void_p(stream), ctypes.c_void_p(params), None)
            return
        cfg, _attr = pdl_launch_config(grid, threads, shared, stream)
        self._call("cuLaunchKernelEx", kernel, ctypes.byref(cfg), fn, ctypes.c_void_p(params), None)

    def unload(self, module: Any) -> None:
        self.lib.cuModuleUnload(module)


_drivers: dict[str, _Driver] = {}


def get_driver() -> _Driver:
    """The driver binding named by ``DRIVER`` (cuda-bindings first when "auto")."""
    want = DRIVER
    if want not in ("auto", "cuda-bindings", "ctypes"):
        raise EngineError(f"trtjit.cuda_launcher.DRIVER must be 'auto', 'cuda-bindings' or 'ctypes', got {want!r}")
    if want in _drivers:
        return _drivers[want]
    drv: _Driver
    if want in ("auto", "cuda-bindings"):
        try:
            drv = _BindingsDriver()
        except ImportError:
            if want == "cuda-bindings":
                raise EngineError("the cuda-bindings package is not installed (pip install cuda-bindings); it "
                                  "launches stored cubins without a C compiler") from None
            drv = _CtypesDriver()
    else:
        drv = _CtypesDriver()
    _drivers[want] = drv
    return drv


# ---------------------------------------------------------------------------------------------- kernels
def _current_device() -> int:
    return torch.cuda.current_device()


def _device_context(ordinal: int) -> Any:
    torch.cuda.init()
    return torch.cuda.device(ordinal)


def _current_stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


class CubinKernel:
    """One stored cubin loaded on one device. ``kernel[grid](*tensors, **ignored)`` launches it, the way a
    ``triton.jit`` function is launched (constexpr and option keywords are compiled in and ignored, except
    ``launch_pdl``: True launches a kernel compiled with the PDL prologue as a programmatic dependent)."""

    def __init__(self, binary: Any, device: torch.device, driver: _Driver | None = None) -> None:
        self.binary = binary
        self.device = device
        self.drv = driver or get_driver()
        b, kname = binary, binary.kernel
        if b.num_ctas != 1 or b.launch_cooperative_grid:
            raise EngineError(f"kernel {kname!r} ({b.target}) needs clusters or cooperative launch "
                              f"(num_ctas={b.num_ctas}), which the cubin launcher does not do")
        self.pdl = bool(b.launch_pdl)  # compiled with PDL=True: may be launched as a programmatic dependent
        ordinal = device.index if device.index is not None else _current_device()
        self.ordinal = ordinal
        with _device_context(ordinal):
            self.drv.init(ordinal, kname)
            self.module = self.drv.load(b.cubin, kname)
            self.fn = self.drv.function(self.module, b.symbol, kname)
            if b.shared > _SMEM_DEFAULT_LIMIT:
                optin = self.drv.device_attr(ordinal, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, kname)
                static = self.drv.func_attr(self.fn, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, kname)
                if b.shared + static > optin:
                    raise EngineError(f"kernel {kname!r} needs {b.shared + static} bytes of shared memory; this GPU "
                                      f"allows {optin} per block")
                self.drv.set_func_attr(self.fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin - static,
                                       kname)
            self.num_regs = self.drv.func_attr(self.fn, CU_FUNC_ATTRIBUTE_NUM_REGS, kname)
        self.threads = 32 * b.num_warps
        self.nparams = len(b.params)
        n = self.nparams + 2
        self._values = (ctypes.c_void_p * n)()
        base = ctypes.addressof(self._values)
        self._pointers = (ctypes.c_void_p * n)(*[base + i * ctypes.sizeof(ctypes.c_void_p) for i in range(n)])
        self._ints = {i: ctypes.c_int32() for i, (_, ty) in enumerate(b.params) if ty == "i32"}  # the batch (nb)
        for i, v in self._ints.items():
            self._pointers[i] = ctypes.addressof(v)
        self._params_addr = ctypes.addressof(self._pointers)
        self._scratch: dict[tuple[int, ...], tuple[torch.Tensor | None, torch.Tensor | None]] = {}

    def _scratch_for(self, grid: tuple[int, int, int]) -> tuple[int | None, int | None]:
        if grid not in self._scratch:
            b = self.binary
            blocks = grid[0] * grid[1] * grid[2] * b.num_ctas
            self._scratch[grid] = (self._alloc(blocks * b.global_scratch_size, b.global_scratch_align),
                                   self._alloc(blocks * b.profile_scratch_size, b.profile_scratch_align))
        ptrs = []
        for t, align in zip(self._scratch[grid], (self.binary.global_scratch_align, self.binary.profile_scratch_align)):
            ptrs.append(None if t is None else t.data_ptr() + (-t.data_ptr()) % align)
        return ptrs[0], ptrs[1]

    def _alloc(self, nbytes: int, align: int) -> torch.Tensor | None:
        if nbytes <= 0:
            return None
        return torch.empty(nbytes + align, dtype=torch.uint8, device=self.device)

    def launch(self, grid: Sequence[int], args: Sequence[torch.Tensor], pdl: bool = False) -> None:
        """Launch on the current stream; ``pdl`` (honoured for kernels compiled with the PDL prologue only)
        lets the kernel start while the previous one drains."""
        kname = self.binary.kernel
        if len(args) != self.nparams:
            raise EngineError(f"kernel {kname!r} takes {self.nparams} buffers, got {len(args)}")
        g = (tuple(grid) + (1, 1, 1))[:3]
        if g[0] * g[1] * g[2] == 0:
            return
        vals = self._values
        for i, t in enumerate(args):
            if i in self._ints:  # a 32-bit integer parameter: the runtime batch of a dynamic-batch kernel
                self._ints[i].value = int(t)
                continue
            p = t.data_ptr()
            if p % POINTER_ALIGN:
                raise EngineError(f"kernel {kname!r}: buffer {i} ({self.binary.params[i][0]}) at {p:#x} is not "
                                  f"{POINTER_ALIGN}-byte aligned, which its compiled binary assumes")
            vals[i] = p
        vals[self.nparams], vals[self.nparams + 1] = self._scratch_for(g)
        stream = _current_stream(self.device)
        self.drv.launch(self.fn, g, self.threads, self.binary.shared, stream, self._params_addr, kname,
                        pdl=pdl and self.pdl)

    def __getitem__(self, grid: Sequence[int]) -> Callable[..., None]:
        def run(*args: torch.Tensor, launch_pdl: bool = False, **_ignored: Any) -> None:
            self.launch(grid, args, pdl=launch_pdl)
        return run


def engine_kernels(engine: Any, device: torch.device) -> list[CubinKernel] | None:
    """The engine's kernels as stored cubins for ``device``'s arch (cached per device); None when the
    engine holds none for that arch and may fall back to Triton's JIT; EngineError when it may not."""
    cache = engine.__dict__.setdefault("_cubin_fns", {})
    if device in cache:
        return cache[device]
    arch = current_arch(device)
    bins = engine.binaries.get(arch) if arch else None
    if bins is None:
        if not getattr(engine, "allow_jit", True):
            raise EngineError(f"this engine holds kernel binaries for {', '.join(engine.targets) or 'no arch'}, "
                              f"but {device} is {arch}; load it with trtjit.load(path, rebuild=True) to JIT-compile "
                              f"its kernels from the IR, or rebuild it with targets=[{arch!r}]")
        cache[device] = None
        return None
    drv = get_driver()
    loaded: dict[tuple[str, bytes], CubinKernel] = {}  # kernels sharing a binary share one module
    for b in bins:
        if (b.symbol, b.cubin) not in loaded:
            loaded[(b.symbol, b.cubin)] = CubinKernel(b, device, drv)
    cache[device] = [loaded[(b.symbol, b.cubin)] for b in bins]
    return cache[device]


def describe(engine: Any, device: torch.device | None = None) -> str:
    """How the engine's kernels run on ``device`` (or the current one): interpreter, stored cubins or JIT."""
    from trtjit.backend import interpreting

    if interpreting() or not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return "Triton interpreter (CPU)"
    arch = current_arch(device)
    if arch in engine.binaries:
        try:
            drv = get_driver().name
        except EngineError:
            drv = "unavailable driver binding"
        return f"stored {arch} cubins via the CUDA driver ({drv})"
    return f"Triton JIT for {arch}"


def check_loadable(engine: Any, path: Any, rebuild: bool = False, arch: str | None = None) -> None:
    """At load: on a GPU, an engine file holding binaries must hold them for this GPU's arch (or ``rebuild``
    lets Triton's JIT compile the kernels regenerated from the IR). Sets ``engine.allow_jit``."""
    from trtjit.engine_file import EngineFileError

    arch = arch or current_arch()
    engine.allow_jit = rebuild or not engine.binaries
    if arch is None or not engine.binaries or arch in engine.binaries:
        return
    if not rebuild:
        gpu = f"{torch.cuda.get_device_name()}, {arch}" if torch.cuda.is_available() else arch
        raise EngineFileError(
            f"{path}: engine file holds kernel binaries for {', '.join(engine.targets)} only, not for this GPU "
            f"({gpu}); rebuild it for "
            f"this GPU (trtjit.compile(..., targets=[{arch!r}]) or `trtjit build --target {arch}`), or load it with "
            "trtjit.load(path, rebuild=True) to JIT-compile its kernels from the IR")
