#include "quant/int8.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace matry::quant {
namespace {

constexpr float kCodeLevels = 255.0f;   // codes 0..255
constexpr float kQueryLevels = 127.0f;  // query values -127..127

std::uint8_t round_to_code(float value) {
  const float rounded = std::nearbyint(value);
  return static_cast<std::uint8_t>(std::min(kCodeLevels, std::max(0.0f, rounded)));
}

}  // namespace

void Int8Quantizer::observe(const float* row) {
  if (observed_ == 0) {
    sum_.assign(dim_, 0.0);
    min_.assign(row, row + dim_);
    max_.assign(row, row + dim_);
  }
  for (std::size_t j = 0; j < dim_; ++j) {
    sum_[j] += row[j];
    min_[j] = std::min(min_[j], row[j]);
    max_[j] = std::max(max_[j], row[j]);
  }
  ++observed_;
}

void Int8Quantizer::finish_training() {
  offset_.assign(dim_, 0.0f);
  scale_.assign(dim_, 1.0f);
  if (observed_ == 0) return;
  for (std::size_t j = 0; j < dim_; ++j) {
    if (mode_ == Int8Mode::per_vector) {
      offset_[j] = static_cast<float>(sum_[j] / static_cast<double>(observed_));
    } else {
      offset_[j] = min_[j];
      // A (near) constant dimension gets scale 1: its codes are all 0 and a tiny scale would
      // only push the query's w_j towards denormals.
      constexpr float kConstantRange = 1e-12f;
      const float range = max_[j] - min_[j];
      scale_[j] = range > kConstantRange ? range / kCodeLevels : 1.0f;
    }
  }
  sum_ = {};
  min_ = {};
  max_ = {};
}

void Int8Quantizer::set_parameters(std::vector<float> offset, std::vector<float> scale) {
  offset_ = std::move(offset);
  scale_ = std::move(scale);
}

void Int8Quantizer::encode(const float* row, std::size_t prefix, CodeHeader& header,
                           std::uint8_t* code) const {
  double squared = 0.0;
  const std::size_t norm_width = prefix > 0 ? prefix : dim_;
  for (std::size_t j = 0; j < norm_width; ++j) squared += static_cast<double>(row[j]) * row[j];
  if (prefix == 0) {
    header.norm = static_cast<float>(squared);
  } else {
    header.norm = squared > 0.0 ? static_cast<float>(1.0 / std::sqrt(squared)) : 0.0f;
  }
  if (mode_ == Int8Mode::per_dimension) {
    header.lo = 0.0f;
    header.step = 1.0f;
    for (std::size_t j = 0; j < dim_; ++j) {
      code[j] = round_to_code((row[j] - offset_[j]) / scale_[j]);
    }
    return;
  }
  float lo = std::numeric_limits<float>::infinity();
  float hi = -lo;
  for (std::size_t j = 0; j < dim_; ++j) {
    const float z = row[j] - offset_[j];
    lo = std::min(lo, z);
    hi = std::max(hi, z);
  }
  const float step = hi > lo ? (hi - lo) / kCodeLevels : 1.0f;
  header.lo = lo;
  header.step = step;
  for (std::size_t j = 0; j < dim_; ++j) code[j] = round_to_code((row[j] - offset_[j] - lo) / step);
}

void Int8Quantizer::prepare_query(const float* query, std::size_t width, CodeQuery& out) const {
  out.u.resize(width);
  float largest = 0.0f;
  double sum_w = 0.0;
  double offset_dot = 0.0;
  double squared = 0.0;
  for (std::size_t j = 0; j < width; ++j) {
    const float w = query[j] * scale_[j];
    largest = std::max(largest, std::fabs(w));
    sum_w += w;
    offset_dot += static_cast<double>(query[j]) * offset_[j];
    squared += static_cast<double>(query[j]) * query[j];
  }
  out.w_scale = largest > 0.0f ? largest / kQueryLevels : 1.0f;
  const float inverse = 1.0f / out.w_scale;
  for (std::size_t j = 0; j < width; ++j) {
    out.u[j] = static_cast<std::int8_t>(std::nearbyint(query[j] * scale_[j] * inverse));
  }
  out.sum_w = static_cast<float>(sum_w);
  out.offset_dot = static_cast<float>(offset_dot);
  out.squared_norm = static_cast<float>(squared);
}

}  // namespace matry::quant
