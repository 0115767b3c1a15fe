// The fastlayers._C Python module. Importing it loads this library, which registers the ops
// (ops.cpp and the backends); its own functions are the CPU settings behind fastlayers.cpu_isa,
// fastlayers.set_cpu_isa, fastlayers.cpu_isas, fastlayers.cpu_winograd and
// fastlayers.set_cpu_winograd.
#include <Python.h>

#include <initializer_list>

#include "cpu_context.h"
#include "kernels/cpu/fma_peak.h"

namespace {

using fastlayers::cpu::Isa;

PyObject* get_cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(fastlayers::cpu::isa_name(fastlayers::cpu_isa()));
}

PyObject* set_cpu_isa(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : nullptr;
  Isa isa;
  if (name == nullptr || !fastlayers::cpu::parse_isa(name, &isa)) {
    PyErr_Format(PyExc_ValueError,
                 "fastlayers.set_cpu_isa: expected one of 'generic', 'avx2', 'avx512', 'best', "
                 "but got %R", arg);
    return nullptr;
  }
  if (!fastlayers::set_cpu_isa(isa)) {
    PyErr_Format(PyExc_ValueError,
                 "fastlayers.set_cpu_isa: this CPU does not support %s (the best it has is %s)",
                 name, fastlayers::cpu::isa_name(fastlayers::cpu::best_isa()));
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* cpu_isas(PyObject*, PyObject*) {
  PyObject* list = PyList_New(0);
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
    if (!fastlayers::cpu::isa_supported(isa)) continue;
    PyObject* name = PyUnicode_FromString(fastlayers::cpu::isa_name(isa));
    PyList_Append(list, name);
    Py_DECREF(name);
  }
  return list;
}

PyObject* get_cpu_winograd(PyObject*, PyObject*) { return PyBool_FromLong(fastlayers::cpu_winograd()); }

PyObject* set_cpu_winograd(PyObject*, PyObject* arg) {
  if (!PyBool_Check(arg)) {
    PyErr_Format(PyExc_TypeError, "fastlayers.set_cpu_winograd: expected a bool, but got %R", arg);
    return nullptr;
  }
  fastlayers::set_cpu_winograd(arg == Py_True);
  Py_RETURN_NONE;
}

PyObject* fma_peak_gflops(PyObject*, PyObject* args) {
  int threads = 0;
  double seconds = 0.2;
  if (!PyArg_ParseTuple(args, "i|d", &threads, &seconds)) return nullptr;
  if (threads < 1 || !(seconds > 0)) {
    PyErr_SetString(PyExc_ValueError, "fma_peak_gflops: threads must be >= 1 and seconds > 0");
    return nullptr;
  }
  fastlayers::cpu::Context ctx = fastlayers::cpu_context();
  ctx.num_threads = threads;
  double gflops;
  Py_BEGIN_ALLOW_THREADS gflops = fastlayers::cpu::fma_peak_gflops(ctx, seconds);
  Py_END_ALLOW_THREADS return PyFloat_FromDouble(gflops);
}

PyMethodDef methods[] = {
    {"cpu_isa", get_cpu_isa, METH_NOARGS, "The instruction set the CPU kernels use."},
    {"set_cpu_isa", set_cpu_isa, METH_O, "Chooses the CPU kernels' instruction set."},
    {"cpu_isas", cpu_isas, METH_NOARGS, "The instruction sets this CPU supports."},
    {"cpu_winograd", get_cpu_winograd, METH_NOARGS, "Whether 3x3 and 5x5 convs may use Winograd."},
    {"set_cpu_winograd", set_cpu_winograd, METH_O, "Allows or forbids Winograd for 3x3 and 5x5 convs."},
    {"fma_peak_gflops", fma_peak_gflops, METH_VARARGS,
     "fma_peak_gflops(threads, seconds=0.2): measured float32 FMA peak of the current ISA."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "fastlayers kernels", -1, methods};
  return PyModule_Create(&module);
}
