// One pass of the sampled band over every score (docs/method.md §3, README "Speed").
//
// For each site j (scores (B, m_j), float32) and row b: how many |s| lie below
// lo[b] and at or below hi[b] (|s| read as the int32 bit pattern with the
// sign bit cleared, which orders like the magnitudes), and the bit patterns
// of the scores in [lo[b], hi[b]] when lo[b] < hi[b], in the order
// (site, row, position) -- what counting, marking, tf.where and gathering
// give in four passes. Rows are split into chunks run on TensorFlow's CPU
// thread pool; one branch-free loop per chunk counts and compacts.

#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define KERAS_PATHWAYS_X86 1
#endif

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace keras_pathways {

using ::tensorflow::OpInputList;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;

REGISTER_OP("KerasPathwaysBandScan")
    .Input("scores: num_sites * float")
    .Input("lo: int32")
    .Input("hi: int32")
    .Attr("num_sites: int >= 1")
    .Attr("vectorized: bool = true")  // false: the portable loop even where AVX-512 is present
    .Output("below: int32")
    .Output("through: int32")
    .Output("bits: int32")
    .Output("rows: int32")
    .Output("sites: int32")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      int num_sites;
      TF_RETURN_IF_ERROR(c->GetAttr("num_sites", &num_sites));
      auto batch = c->Dim(c->input(num_sites), 0);
      c->set_output(0, c->Matrix(batch, num_sites));
      c->set_output(1, c->Matrix(batch, num_sites));
      for (int i = 2; i < 5; ++i) c->set_output(i, c->Vector(c->UnknownDim()));
      return ::absl::OkStatus();
    });

// Counts the scores below l and writes those in [l, l + width] to o (which
// has room for n + 16); returns how many it wrote. Magnitudes: the sign bit
// is cleared first.
static int64_t ScanScalar(const int32_t* p, int64_t n, int32_t l, uint32_t width, int32_t* o,
                          int32_t* n_below) {
  int32_t below = 0;
  int64_t w = 0;
  for (int64_t i = 0; i < n; ++i) {  // free of branches: every score is stored, w advances for members
    const int32_t v = p[i] & 0x7FFFFFFF;
    below += v < l;
    o[w] = v;
    w += static_cast<uint32_t>(v - l) <= width;
  }
  *n_below = below;
  return w;
}

#ifdef KERAS_PATHWAYS_X86
// The same with AVX-512: 16 scores per step, members packed by a register
// compress and stored as a whole vector (o has 16 values of room past n).
__attribute__((target("avx512f,popcnt"))) static int64_t ScanAvx512(
    const int32_t* p, int64_t n, int32_t l, uint32_t width, int32_t* o, int32_t* n_below) {
  const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF);
  const __m512i low = _mm512_set1_epi32(l);
  const __m512i span = _mm512_set1_epi32(static_cast<int32_t>(width));
  const __m512i one = _mm512_set1_epi32(1);
  __m512i below = _mm512_setzero_si512();
  int64_t w = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_and_si512(_mm512_loadu_si512(p + i), magnitude);
    below = _mm512_mask_add_epi32(below, _mm512_cmplt_epi32_mask(v, low), below, one);
    const __mmask16 in = _mm512_cmple_epu32_mask(_mm512_sub_epi32(v, low), span);
    _mm512_storeu_si512(o + w, _mm512_maskz_compress_epi32(in, v));
    w += _mm_popcnt_u32(in);
  }
  int32_t tail_below = 0;
  w += ScanScalar(p + i, n - i, l, width, o + w, &tail_below);
  *n_below = _mm512_reduce_add_epi32(below) + tail_below;
  return w;
}
#endif

static bool HasAvx512() {
#ifdef KERAS_PATHWAYS_X86
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("popcnt");
  return has;
#else
  return false;
#endif
}

class BandScanOp : public OpKernel {
 public:
  explicit BandScanOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("vectorized", &vectorized_));
  }

  void Compute(OpKernelContext* context) override {
    OpInputList scores;
    OP_REQUIRES_OK(context, context->input_list("scores", &scores));
    const Tensor& lo_tensor = context->input(scores.size());
    const Tensor& hi_tensor = context->input(scores.size() + 1);
    OP_REQUIRES(context, lo_tensor.dims() == 1 && hi_tensor.shape() == lo_tensor.shape(),
                InvalidArgument("lo and hi must be vectors of one length (the batch)"));
    const int64_t batch = lo_tensor.dim_size(0);
    const int num_sites = scores.size();
    const int32_t* lo = lo_tensor.flat<int32_t>().data();
    const int32_t* hi = hi_tensor.flat<int32_t>().data();

    struct Chunk {
      int site;
      int64_t row, begin, end;
    };
    constexpr int64_t kChunk = 1 << 15;  // 128 KiB of scores: both loops run in the cache
    std::vector<Chunk> chunks;
    for (int j = 0; j < num_sites; ++j) {
      OP_REQUIRES(context, scores[j].dims() == 2 && scores[j].dim_size(0) == batch,
                  InvalidArgument("scores must be (batch, m) matrices; site ", j, " is ",
                                  scores[j].shape().DebugString()));
      const int64_t m = scores[j].dim_size(1);
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t begin = 0; begin < m; begin += kChunk)
          chunks.push_back({j, b, begin, begin + kChunk < m ? begin + kChunk : m});
    }
    const int64_t num_chunks = static_cast<int64_t>(chunks.size());
    std::vector<int32_t> below(num_chunks), through(num_chunks);
    std::vector<std::vector<int32_t>> members(num_chunks);

    const bool avx512 = vectorized_ && HasAvx512();
    auto work = [&](int64_t start, int64_t limit) {
      std::vector<int32_t> scratch(kChunk + 16);  // a chunk's members, before the exact-size copy
      for (int64_t c = start; c < limit; ++c) {
        const Chunk& k = chunks[c];
        const int64_t m = scores[k.site].dim_size(1);
        const int32_t* p =
            reinterpret_cast<const int32_t*>(scores[k.site].flat<float>().data()) + k.row * m + k.begin;
        const int64_t n = k.end - k.begin;
        const int32_t l = lo[k.row], h = hi[k.row];
        int32_t n_below = 0;
        if (l < h) {  // those at or below h: the ones below l plus the members
          const uint32_t width = static_cast<uint32_t>(h - l);
#ifdef KERAS_PATHWAYS_X86
          const int64_t w = avx512 ? ScanAvx512(p, n, l, width, scratch.data(), &n_below)
                                   : ScanScalar(p, n, l, width, scratch.data(), &n_below);
#else
          const int64_t w = ScanScalar(p, n, l, width, scratch.data(), &n_below);
#endif
          members[c].assign(scratch.data(), scratch.data() + w);
          below[c] = n_below;
          through[c] = n_below + static_cast<int32_t>(w);
        } else {  // a one-value band marks nothing: counts only (vectorised)
          int32_t n_through = 0;
          for (int64_t i = 0; i < n; ++i) {
            const int32_t v = p[i] & 0x7FFFFFFF;
            n_below += v < l;
            n_through += v <= h;
          }
          below[c] = n_below;
          through[c] = n_through;
        }
      }
    };
    context->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        num_chunks, /*cost_per_unit=*/4 * kChunk, work);

    Tensor* below_out = nullptr;
    Tensor* through_out = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({batch, num_sites}), &below_out));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({batch, num_sites}), &through_out));
    auto below_m = below_out->matrix<int32_t>();
    auto through_m = through_out->matrix<int32_t>();
    below_m.setZero();
    through_m.setZero();
    int64_t total = 0;
    for (int64_t c = 0; c < num_chunks; ++c) {
      below_m(chunks[c].row, chunks[c].site) += below[c];
      through_m(chunks[c].row, chunks[c].site) += through[c];
      total += static_cast<int64_t>(members[c].size());
    }
    Tensor* bits_out = nullptr;
    Tensor* rows_out = nullptr;
    Tensor* sites_out = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(2, TensorShape({total}), &bits_out));
    OP_REQUIRES_OK(context, context->allocate_output(3, TensorShape({total}), &rows_out));
    OP_REQUIRES_OK(context, context->allocate_output(4, TensorShape({total}), &sites_out));
    int32_t* bits = bits_out->flat<int32_t>().data();
    int32_t* rows = rows_out->flat<int32_t>().data();
    int32_t* sites = sites_out->flat<int32_t>().data();
    int64_t at = 0;
    for (int64_t c = 0; c < num_chunks; ++c) {
      const int64_t n = static_cast<int64_t>(members[c].size());
      if (n) std::memcpy(bits + at, members[c].data(), n * sizeof(int32_t));
      std::fill(rows + at, rows + at + n, static_cast<int32_t>(chunks[c].row));
      std::fill(sites + at, sites + at + n, static_cast<int32_t>(chunks[c].site));
      at += n;
    }
  }

 private:
  bool vectorized_ = true;
};

REGISTER_KERNEL_BUILDER(Name("KerasPathwaysBandScan").Device(::tensorflow::DEVICE_CPU), BandScanOp);

}  // namespace keras_pathways
