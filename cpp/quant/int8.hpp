// Scalar 8-bit codes for graph traversal (the f32 rows stay for the exact rerank and get()).
//
// Each dimension is first mapped affinely, z_j = (x_j - offset_j) / scale_j, then each vector
// gets its own range: x_j ~ offset_j + scale_j * (lo + step * c_j) with c_j in 0..255.
//   per_vector (LVQ-style): offset = the mean of the training rows, scale = 1, (lo, step) fitted
//                           to each vector's own min and max;
//   per_dimension (SQ8):    offset = per-dim min, scale = per-dim range / 255, lo = 0, step = 1.
// A query is prepared once: w_j = q_j * scale_j is quantized to int8 with one scale, so
//   q . x_hat = sum(q_j offset_j) + lo * sum(w_j) + step * w_scale * sum(u_j c_j),
// and the last sum is the exact integer dot product of kernels::CodeKernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace matry::quant {

enum class Int8Mode : std::uint32_t { per_vector = 1, per_dimension = 2 };

// Per-node floats stored in front of the code bytes.
struct CodeHeader {
  float lo;
  float step;
  // From the f32 row: 1/|x[:prefix]| when encoded with a prefix width (prefix cosine/ip
  // traversal reads it here instead of from a separate table), else |x|^2 (l2 distances).
  float norm;
};

// A query prepared for code distances over its first `width` dims.
struct CodeQuery {
  std::vector<std::int8_t> u;
  float w_scale = 0.0f;       // w ~ w_scale * u
  float sum_w = 0.0f;         // sum of the unquantized w_j
  float offset_dot = 0.0f;    // sum q_j offset_j
  float squared_norm = 0.0f;  // |q[:width]|^2
};

class Int8Quantizer {
 public:
  Int8Quantizer() = default;
  Int8Quantizer(std::size_t dim, Int8Mode mode) : dim_(dim), mode_(mode) {}

  std::size_t dim() const { return dim_; }
  Int8Mode mode() const { return mode_; }
  bool trained() const { return !offset_.empty(); }
  const std::vector<float>& offset() const { return offset_; }
  const std::vector<float>& scale() const { return scale_; }

  // Streaming fit over rows handed in one at a time; finish_training() fixes the parameters.
  void observe(const float* row);
  void finish_training();
  // Parameters from a file (checked by the caller).
  void set_parameters(std::vector<float> offset, std::vector<float> scale);

  // Bytes of one node's payload: CodeHeader then `dim` code bytes.
  std::size_t payload_bytes() const { return sizeof(CodeHeader) + dim_; }
  // `prefix` > 0: the header carries 1/|row[:prefix]|, else |row|^2.
  void encode(const float* row, std::size_t prefix, CodeHeader& header, std::uint8_t* code) const;
  void prepare_query(const float* query, std::size_t width, CodeQuery& out) const;

 private:
  std::size_t dim_ = 0;
  Int8Mode mode_ = Int8Mode::per_vector;
  std::vector<float> offset_;
  std::vector<float> scale_;
  // Training accumulators.
  std::vector<double> sum_;
  std::vector<float> min_;
  std::vector<float> max_;
  std::size_t observed_ = 0;
};

}  // namespace matry::quant
