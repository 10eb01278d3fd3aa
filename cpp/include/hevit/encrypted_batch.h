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
    /** The fixed metadata at the start of a serialized EncryptedBatch's payload. */
    struct BatchMetadata
    {
        Layout layout{};
        /** Seeds per ciphertext (0: c1 stored in full). */
        std::uint8_t seed_count = 0;
        std::uint32_t prime_count = 0;
        std::uint64_t rows = 0;
        std::uint64_t cols = 0;
        std::uint64_t period = 0;
        double scale = 0.0;
        double norm_bound = 0.0;
        std::uint64_t ciphertext_count = 0;
    };

    /**
    A (rows x cols) matrix of real values encrypted in one slot layout under one key set.

    Ciphertexts are always kept expanded in memory (ready for evaluation). Fresh symmetric
    encryptions also keep their 64-byte seeds, and so do sums of fresh encryptions (c1 of a sum of
    k fresh ciphertexts is the sum of the k seed expansions, up to max_seeds): to_bytes sends c0
    and the seeds instead of c0 and c1, so an aggregate of k client batches travels in about half
    the bytes. Plan outputs (and sums past max_seeds) are sent whole. Coefficients are bit-packed
    to each prime's width.

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
        /** True when c1 of every ciphertext is stored as seeds (fresh encryptions and their sums). */
        bool seeded() const noexcept { return !seeds_.empty(); }
        /**
        Seeds per ciphertext: 1 for a fresh symmetric encryption, k for the sum of k of them (c1 is
        the sum of the k expanded seeds), 0 when c1 is stored in full.
        */
        std::size_t seed_count() const noexcept { return seeds_.size() / ciphertexts_.size(); }

        /** Most seeds one ciphertext may carry; sums of more fresh batches store c1 in full. */
        static constexpr std::size_t max_seeds_per_ciphertext = 255;
        const std::vector<seal::Ciphertext> &ciphertexts() const noexcept { return ciphertexts_; }
        /**
        The public seeds of a seeded batch, ciphertext after ciphertext (seed_count() seeds each, in
        the order the summed batches were given): what a key holder compares with the seeds the
        contributors signed before it decrypts a sum. Empty when c1 is stored in full.
        */
        const std::vector<seal::prng_seed_type> &seeds() const noexcept { return seeds_; }

        /** Serialized form (kind EncryptedBatch), bit-packing ciphertexts on threads (<= 0: all cores). */
        std::string to_bytes(int threads) const;
        std::size_t byte_size() const noexcept;

        /**
        Loads bytes made under context's key set, expanding seeds on threads.

        @throws SerializationError for malformed bytes, ContextMismatchError for another key set
        */
        static EncryptedBatch from_bytes(std::string_view bytes, std::shared_ptr<const PublicContext> context, int threads);

        /**
        The metadata of serialized bytes, read without loading them: magic, version, kind and
        declared size are checked, not the checksum, key set or shape (from_bytes checks all of
        it). What a server compares with its expectations before it spends work on a message.

        @throws SerializationError
        */
        static BatchMetadata peek(std::string_view bytes);

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
} // namespace hevit
