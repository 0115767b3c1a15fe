# Builds fastlayers._C with torch.utils.cpp_extension and ninja: the CUDA extension when torch has
# CUDA and nvcc is found, the CPU one otherwise. FASTLAYERS_CUDA=0/1 forces the choice.
# Build against the installed torch: pip install --no-build-isolation -e .
import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch


def want_cuda():
    forced = os.environ.get("FASTLAYERS_CUDA")
    if forced is not None:
        return forced == "1"
    has_nvcc = CUDA_HOME is not None and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))
    return torch.version.cuda is not None and has_nvcc


cuda = want_cuda()
sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/kernels/cpu/*.cpp"))
if not cuda:
    sources = [s for s in sources if not s.startswith("csrc/cuda_")]
else:
    sources += sorted(glob.glob("csrc/kernels/cuda/*.cu"))
    # SASS for sm_80 and sm_90, and sm_90's PTX, which newer GPUs compile when they load it.
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")

# -O3 for the kernels; OpenMP is torch's own libgomp at run time (same soname, loaded first).
# No -march=native: the wheel must run on any x86-64.
cxx_flags = ["-O3", "-std=c++17", "-fopenmp", "-Wall", "-Wno-unknown-pragmas"]
link_flags = ["-fopenmp"]
# FASTLAYERS_SANITIZE=1: AddressSanitizer and UndefinedBehaviorSanitizer (make sanitize), every
# finding fatal. The optimiser stays on, so the vectorised paths that ship are the ones checked.
if os.environ.get("FASTLAYERS_SANITIZE") == "1":
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
    cxx_flags += sanitize
    link_flags += sanitize
# torch adds its own (COMMON_NVCC_FLAGS: no implicit half conversions, --expt-relaxed-constexpr);
# -lineinfo lets compute-sanitizer name source lines. scripts/cuda_compile_check.py uses the same.
NVCC_FLAGS = ["-O3", "-std=c++17", "-lineinfo"]
extension = CUDAExtension if cuda else CppExtension
ext = extension(
    "fastlayers._C",
    sources,
    extra_compile_args={"cxx": cxx_flags, "nvcc": NVCC_FLAGS} if cuda else cxx_flags,
    extra_link_args=link_flags,
)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
