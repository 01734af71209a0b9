// Test runner: the package's CUDA kernels (custom_ops/*/*_kernels.cuh),
// compiled by the host compiler with the CUDA emulation and run on the CPU,
// normally under -fsanitize=address,undefined (tests/test_cuda_emulation.py
// builds and drives it).
//
//   emulate_kernels mask|attention forward|backward DTYPE N C H W MH MW
//                   PSA_TYPE SOFTMAX THREADS MAX_BLOCKS ORDER DIR
//   emulate_kernels index N H W MH MW PSA_TYPE DIR
//
// DTYPE: float64 | float32 | float16 | bfloat16. THREADS / MAX_BLOCKS: the
// launch shape (small values make the grid-stride loops wrap). ORDER:
// forward | reverse, the order blocks and threads run in. C and SOFTMAX are
// ignored by the mask op. DIR holds the inputs as raw little-endian float64
// files and receives the outputs the same way (each value converted exactly
// from the kernel's type):
//   mask forward:       x.bin                           -> y.bin
//   mask backward:      dy.bin                          -> dx.bin
//   attention forward:  x.bin a.bin                     -> out.bin lse.bin
//   attention backward: x.bin a.bin out.bin lse.bin dout.bin -> dx.bin da.bin
// Device buffers are separate heap blocks of exactly their size, so the
// sanitizer sees any access past them; outputs and scratch start as NaN bits
// (what cudaMalloc'ed memory may hold), so an entry no kernel writes shows.
//
// index: for the int64 x indices in DIR/indices.bin, writes
// psa_mask::map_x_to_y for the geometry to DIR/targets.bin, and the blocks
// of a default launch over x to DIR/blocks.bin (checks the 64-bit index
// arithmetic at sizes no test can allocate).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "psa_attention_kernels.cuh"
#include "psa_mask_kernels.cuh"

namespace {

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "emulate_kernels: %s\n", what.c_str());
  std::exit(2);
}

std::vector<char> ReadFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) Fail("cannot open " + path);
  std::vector<char> data;
  char chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof(chunk), f)) > 0) {
    data.insert(data.end(), chunk, chunk + got);
  }
  std::fclose(f);
  return data;
}

void WriteFile(const std::string& path, const void* data, size_t bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(data, 1, bytes, f) != bytes) Fail("cannot write " + path);
  std::fclose(f);
}

template <typename T>
T FromDouble(double v) { return static_cast<T>(v); }
template <>
__half FromDouble<__half>(double v) { return __float2half_rn(static_cast<float>(v)); }
template <>
__nv_bfloat16 FromDouble<__nv_bfloat16>(double v) {
  return __float2bfloat16_rn(static_cast<float>(v));
}

template <typename T>
double ToDouble(T v) { return static_cast<double>(v); }
template <>
double ToDouble<__half>(__half v) { return __half2float(v); }
template <>
double ToDouble<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

// One device allocation of exactly `numel` elements.
template <typename T>
class Buffer {
 public:
  explicit Buffer(int64_t numel) : numel_(numel), data_(new T[numel > 0 ? numel : 1]) {
    std::memset(static_cast<void*>(data_), 0xff, sizeof(T) * (numel > 0 ? numel : 1));
  }
  Buffer(const std::string& path, int64_t numel) : Buffer(numel) {
    const std::vector<char> raw = ReadFile(path);
    if (static_cast<int64_t>(raw.size()) != numel * 8) {
      Fail(path + ": expected " + std::to_string(numel) + " float64 values");
    }
    for (int64_t k = 0; k < numel; ++k) {
      double v;
      std::memcpy(&v, raw.data() + 8 * k, 8);
      data_[k] = FromDouble<T>(v);
    }
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { delete[] data_; }

  T* get() { return data_; }
  void Save(const std::string& path) const {
    std::vector<double> out(numel_);
    for (int64_t k = 0; k < numel_; ++k) out[k] = ToDouble<T>(data_[k]);
    WriteFile(path, out.data(), out.size() * sizeof(double));
  }

 private:
  int64_t numel_;
  T* data_;
};

struct Args {
  bool forward;
  int64_t n, c, h, w, mh, mw;
  int psa_type;
  bool softmax;
  kernel_support::LaunchShape shape;
  std::string dir;
};

void Check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) Fail(std::string(what) + ": " + cudaGetErrorString(err));
}

template <typename T>
void RunMask(const Args& r) {
  const int64_t x_numel = r.n * r.mh * r.mw * r.h * r.w;
  const int64_t y_numel = r.n * (r.h * r.w) * (r.h * r.w);
  if (r.forward) {
    Buffer<T> x(r.dir + "/x.bin", x_numel), y(y_numel);
    Check(psa_mask_cuda::LaunchForward<T>(x.get(), y.get(), r.n, r.h, r.w, r.mh, r.mw,
                                          r.psa_type, r.shape, nullptr),
          "psa_mask forward");
    y.Save(r.dir + "/y.bin");
  } else {
    Buffer<T> dy(r.dir + "/dy.bin", y_numel), dx(x_numel);
    Check(psa_mask_cuda::LaunchBackward<T>(dy.get(), dx.get(), r.n, r.h, r.w, r.mh, r.mw,
                                           r.psa_type, r.shape, nullptr),
          "psa_mask backward");
    dx.Save(r.dir + "/dx.bin");
  }
}

template <typename T>
void RunAttention(const Args& r) {
  typedef typename kernel_support::Acc<T>::type A;
  const int64_t plane = r.h * r.w;
  const int64_t x_numel = r.n * r.c * plane, a_numel = r.n * r.mh * r.mw * plane;
  Buffer<T> x(r.dir + "/x.bin", x_numel), a(r.dir + "/a.bin", a_numel);
  if (r.forward) {
    Buffer<T> out(x_numel);
    Buffer<A> lse(r.n * plane), col_sum(r.n * r.c), zero_w(r.n * plane);
    Check(psa_attention_cuda::LaunchForward<T>(
              x.get(), a.get(), out.get(), lse.get(), col_sum.get(), zero_w.get(), r.n, r.c,
              r.h, r.w, r.mh, r.mw, r.psa_type, r.softmax, r.shape, nullptr),
          "psa_attention forward");
    out.Save(r.dir + "/out.bin");
    lse.Save(r.dir + "/lse.bin");
  } else {
    Buffer<T> out(r.dir + "/out.bin", x_numel), dout(r.dir + "/dout.bin", x_numel);
    Buffer<A> lse(r.dir + "/lse.bin", r.n * plane);
    Buffer<T> dx(x_numel), da(a_numel);
    Buffer<A> zero_w(r.n * plane), col_dot(r.n * plane), base(r.n * r.c);
    Check(psa_attention_cuda::LaunchBackward<T>(
              x.get(), a.get(), out.get(), lse.get(), dout.get(), dx.get(), da.get(),
              zero_w.get(), col_dot.get(), base.get(), r.n, r.c, r.h, r.w, r.mh, r.mw,
              r.psa_type, r.softmax, r.shape, nullptr),
          "psa_attention backward");
    dx.Save(r.dir + "/dx.bin");
    da.Save(r.dir + "/da.bin");
  }
}

template <typename T>
void Run(const std::string& op, const Args& r) {
  if (op == "mask") {
    RunMask<T>(r);
  } else if (op == "attention") {
    RunAttention<T>(r);
  } else {
    Fail("unknown op " + op + " (mask, attention, index)");
  }
}

int64_t Int(const char* s) {
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  if (end == s || *end != '\0') Fail(std::string("not an integer: ") + s);
  return v;
}

void RunIndex(char** argv) {
  const psa_mask::Geometry g = psa_mask::make_geometry(Int(argv[2]), Int(argv[3]), Int(argv[4]),
                                                       Int(argv[5]), Int(argv[6]));
  const int psa_type = static_cast<int>(Int(argv[7]));
  const std::string dir = argv[8];
  const std::vector<char> raw = ReadFile(dir + "/indices.bin");
  std::vector<int64_t> idx(raw.size() / 8), out(raw.size() / 8);
  std::memcpy(idx.data(), raw.data(), idx.size() * 8);
  for (size_t k = 0; k < idx.size(); ++k) out[k] = psa_mask::map_x_to_y(g, psa_type, idx[k]);
  WriteFile(dir + "/targets.bin", out.data(), out.size() * 8);
  const int64_t blocks =
      kernel_support::BlocksFor(psa_mask::x_numel(g), kernel_support::kDefaultShape);
  WriteFile(dir + "/blocks.bin", &blocks, 8);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 9 && std::strcmp(argv[1], "index") == 0) {
    RunIndex(argv);
    return 0;
  }
  if (argc != 16) Fail("usage: see the header of emulate_kernels.cc");
  const std::string op = argv[1], pass = argv[2], dtype = argv[3];
  if (pass != "forward" && pass != "backward") Fail("pass must be forward or backward");
  Args r;
  r.forward = pass == "forward";
  r.n = Int(argv[4]);
  r.c = Int(argv[5]);
  r.h = Int(argv[6]);
  r.w = Int(argv[7]);
  r.mh = Int(argv[8]);
  r.mw = Int(argv[9]);
  r.psa_type = static_cast<int>(Int(argv[10]));
  r.softmax = Int(argv[11]) != 0;
  r.shape = kernel_support::LaunchShape{static_cast<int>(Int(argv[12])), Int(argv[13])};
  const std::string order = argv[14];
  if (order != "forward" && order != "reverse") Fail("order must be forward or reverse");
  cuda_emulation::set_launch_order(order == "reverse");
  r.dir = argv[15];
  if (dtype == "float64") {
    Run<double>(op, r);
  } else if (dtype == "float32") {
    Run<float>(op, r);
  } else if (dtype == "float16") {
    Run<__half>(op, r);
  } else if (dtype == "bfloat16") {
    Run<__nv_bfloat16>(op, r);
  } else {
    Fail("unknown dtype " + dtype);
  }
  return 0;
}
