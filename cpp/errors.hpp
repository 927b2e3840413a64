// Exception types of the core; bindings.cpp maps each to a Python exception.
#pragma once

#include <stdexcept>
#include <string>

namespace matry {

// Bad argument value or shape -> ValueError.
struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Unknown or already-present id -> KeyError.
struct KeyNotFound : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Truncated, corrupted or foreign index file -> matry.CorruptIndexError.
struct CorruptIndex : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Filesystem failure while saving or loading -> OSError.
struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace matry
