// Copyright (c) hevit developers. MIT license.
#pragma once

#include "hevit/packing.h"
#include "hevit/public_context.h"
#include "seal/seal.h"
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace hevit
{
    /**
    A (rows x cols) matrix of real values encrypted in one slot layout under one key set.

    Ciphertexts are always kept expanded in memory (ready for evaluation). Fresh symmetric
    encryptions also keep their seeds, so that to_bytes can send c0 and a 64-byte seed instead of
    c0 and c1; anything computed from them (sums, plan outputs) is sent whole. Coefficients are
    bit-packed to each prime's width.

    norm_bound is a public upper bound on the L2 norm of every row (max_norm at encryption, added
    up by sum, propagated by plans); plans use it to guarantee results never wrap the modulus.
    */
    class EncryptedBatch
    {
    public:
        EncryptedBatch(
            std::shared_ptr<const PublicContext> context, Layout layout, std::size_t rows, std::size_t cols,
            std::size_t period, double norm_bound, std::vector<seal::Ciphertext> ciphertexts,
            std::vector<seal::prng_seed_type> seeds = {});

        /**
        Encrypts with the public key (for parties without the secret key). Ciphertexts are not
        seeded, so they are about twice the bytes of SecretContext::encrypt.
        */
        static EncryptedBatch encrypt_public(
            std::shared_ptr<const PublicContext> context, const double *values, std::size_t rows, std::size_t cols,
            Layout layout, int threads);

        /**
        Adds batches elementwise (aggregation across clients).

        @throws ContextMismatchError, LayoutError if the batches differ in key set, layout, shape,
        scale or level
        */
        static EncryptedBatch sum(const std::vector<const EncryptedBatch *> &batches, int threads);

        const std::shared_ptr<const PublicContext> &context() const noexcept { return context_; }
        Layout layout() const noexcept { return layout_; }
        std::size_t rows() const noexcept { return rows_; }
        std::size_t cols() const noexcept { return cols_; }
        /** Sample layout: the slot period of each row; batch layout: 0. */
        std::size_t period() const noexcept { return period_; }
        double norm_bound() const noexcept { return norm_bound_; }
        double scale() const noexcept { return ciphertexts_.front().scale(); }
        std::size_t prime_count() const noexcept { return ciphertexts_.front().coeff_modulus_size(); }
        bool seeded() const noexcept { return !seeds_.empty(); }
        const std::vector<seal::Ciphertext> &ciphertexts() const noexcept { return ciphertexts_; }

        /** Serialized form (kind EncryptedBatch). */
        std::string to_bytes() const;
        std::size_t byte_size() const noexcept;

        /**
        Loads bytes made under context's key set, expanding seeds on threads.

        @throws SerializationError for malformed bytes, ContextMismatchError for another key set
        */
        static EncryptedBatch from_bytes(std::string_view bytes, std::shared_ptr<const PublicContext> context, int threads);

    private:
        std::shared_ptr<const PublicContext> context_;
        Layout layout_;
        std::size_t rows_;
        std::size_t cols_;
        std::size_t period_;
        double norm_bound_;
        std::vector<seal::Ciphertext> ciphertexts_;
        std::vector<seal::prng_seed_type> seeds_;
    };

    namespace detail
    {
        /**
        Validates values (finite, row norms within max_norm, shape fits layout) and returns the
        slot period for the sample layout (0 for batch).
        */
        std::size_t check_plain_input(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout);

        /** The complex slot vector of ciphertext index in layout (see packing.h). */
        void pack_slots(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t period, std::size_t index, std::vector<std::complex<double>> &slots);

        /** Writes the decoded slots of ciphertext index back into the row-major output. */
        void unpack_slots(
            const std::vector<std::complex<double>> &slots, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t n, std::size_t index, double *out);

        /** Regenerates c1 of a seeded ciphertext from its seed (the same expansion encryption used). */
        void expand_seed(const seal::SEALContext &context, const seal::prng_seed_type &seed, seal::Ciphertext &ct);
    } // namespace detail
} // namespace hevit
