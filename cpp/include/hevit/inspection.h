// Copyright (c) hevit developers. MIT license.
#pragma once

#include "hevit/encrypted_batch.h"
#include "hevit/public_context.h"
#include <cstdint>
#include <vector>

namespace hevit
{
    /**
    Read-only views of public objects in coefficient form, for security analysis. For tests and
    attack evaluations only (the Python module hevit._core.inspection, used by tests/he and by
    hevit.attacks.PublicAdversary): no part of hevit's documented API, and the bindings hold the
    GIL in their sampling loops.

    Everything here is computable by anyone holding the public bytes and the SEAL library: the
    ciphertext polynomials of an EncryptedBatch and the CKKS encoding of chosen values. The
    key-recovery test (tests/he/test_key_recovery.py) uses them to show why released decryptions
    need noise flooding. Nothing here touches a secret key.
    */
    class Inspection
    {
    public:
        /**
        The two polynomials (c0, c1) of ciphertext `index`, reduced modulo the first prime, in
        coefficient (not NTT) form; 2 * N values.

        @throws ValueRangeError if index is out of range, LayoutError if the ciphertext has size != 2
        */
        static std::vector<std::uint64_t> ciphertext_coefficients(const EncryptedBatch &batch, std::size_t index);

        /**
        The plaintext polynomial that `values` (rows x cols, row-major) packs into (slots or
        coefficients, as encryption does: packing.h) for
        ciphertext `index` of `layout` at the context's fresh scale, modulo the first prime,
        in coefficient form; N values.

        @throws LayoutError on bad shapes (as encryption would), ValueRangeError for an index out of range
        */
        static std::vector<std::uint64_t> plaintext_coefficients(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t index);

        /** The first prime of the data modulus. */
        static std::uint64_t first_prime(const PublicContext &context);
    };
} // namespace hevit
