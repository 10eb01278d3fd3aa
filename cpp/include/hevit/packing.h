// Copyright (c) hevit developers. MIT license.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <string>

/**
Slot layouts: how a (rows x cols) matrix of real values is spread over CKKS ciphertexts.

Both layouts carry two real values per complex slot (real part and imaginary part), so a
ciphertext of ring degree N carries N values, not N/2. Every operation hevit applies is linear
with real coefficients, which keeps the two parts apart.

- batch: ciphertext (g, j) holds column j (a feature) of rows [g N, (g + 1) N): slot s holds row
  g N + s in its real part and row g N + N/2 + s in its imaginary part. A linear layer needs no
  rotation at all.
- sample: ciphertext m holds rows 2m (real part) and 2m + 1 (imaginary part). Each row is
  zero-padded to a power-of-two period p >= cols and replicated to fill all N/2 slots, so that a
  cyclic rotation of the slots is a cyclic rotation of every row.
- coefficient: ciphertext m holds row m in the polynomial's coefficients, not in slots: value c
  of the row sits at coefficient c * p + p - 1 as round(value * scale), p being the batch's
  period (1 for fresh encryptions: coefficient c). No FFT is involved. A linear layer is one
  plaintext product with the weight polynomial (row k of W reversed at offset k * D), after which
  output k sits at coefficient k * D + D - 1: the output batch has period D. Coefficients are
  independent of each other, so the layout needs one data prime (no rescaling, no rotation).
*/
namespace hevit
{
    enum class Layout : std::uint8_t
    {
        batch = 1,
        sample = 2,
        coefficient = 3,
    };

    const char *layout_name(Layout layout) noexcept;

    /** Parses "batch", "sample" or "coefficient"; throws LayoutError otherwise. */
    Layout parse_layout(const std::string &name);

    /** Smallest power of two >= value (value >= 1); 0 when value exceeds the largest one. */
    std::size_t next_pow2(std::size_t value) noexcept;

    /** Number of ciphertexts a (rows x cols) matrix needs in layout at ring degree n. */
    std::size_t ciphertext_count(Layout layout, std::size_t rows, std::size_t cols, std::size_t n) noexcept;

    /** Ciphertexts per column group in the batch layout: ceil(rows / n). */
    std::size_t batch_groups(std::size_t rows, std::size_t n) noexcept;
} // namespace hevit
