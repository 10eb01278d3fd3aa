// Copyright (c) hevit developers. MIT license.
#pragma once

#include "hevit/compact_batch.h"
#include "hevit/encrypted_batch.h"
#include "hevit/public_context.h"
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace hevit
{
    /**
    The key holder's context: a PublicContext plus the secret key. Encrypts (symmetric, seeded,
    about half the bytes of public-key encryption) and decrypts. Its serialized form has its own
    object kind, so it can never be loaded where a PublicContext is expected.
    */
    class SecretContext
    {
    public:
        /**
        Generates a fresh key set: secret key, public key, and Galois keys for exactly
        rotation_steps (none if empty).

        @throws ParameterError for invalid parameters, or rotations asked of parameters without a
        special prime
        */
        static std::shared_ptr<SecretContext> generate(const CkksParams &params, const std::vector<int> &rotation_steps);

        /**
        Generates a fresh key set with the evaluation keys of keys (rotation steps, conjugation,
        relinearisation).

        @throws ParameterError as above; conjugation or relinearisation also need a special prime
        */
        static std::shared_ptr<SecretContext> generate(const CkksParams &params, const EvaluationKeySpec &keys);

        const std::shared_ptr<const PublicContext> &public_context() const noexcept { return public_; }

        /**
        Encrypts a row-major (rows x cols) matrix in layout with the secret key (seeded).

        @throws ValueRangeError for NaN/inf or a row whose L2 norm exceeds params().max_norm
        @throws LayoutError for shapes the layout cannot hold
        */
        EncryptedBatch encrypt(const double *values, std::size_t rows, std::size_t cols, Layout layout, int threads) const;

        /**
        Decrypts into a row-major (rows x cols) buffer. The values are exact CKKS decryptions: they
        carry the key-dependent ciphertext noise and must stay with the key holder.

        @throws ContextMismatchError for another key set
        */
        void decrypt(const EncryptedBatch &batch, double *out, int threads) const;

        /**
        Decrypts with noise flooding in the integer domain, into a row-major (rows x cols) buffer:
        after SEAL's decryption and before decoding, every coefficient of every ciphertext's
        plaintext polynomial gets an independent sample of the discrete Gaussian
        D_{Z, DiscreteGaussian::representable_sigma(sigma)} (one integer, reduced modulo each prime
        of the level). The samples of ciphertext i come from ChaCha20Stream(noise_key, i), so the
        output is a deterministic function of (secret key, batch, sigma, noise_key): bit-identical
        whatever the thread count and at every party holding the same key and batch. Decoding
        then reads the flooded coefficients as decrypt does (post-processing).

        sigma is in integer (coefficient) units: a value in coefficients moves by sigma / scale, a
        value in slots by sigma * sqrt(N / 2) / scale.

        One noise_key per batch: ciphertext i of two different batches flooded under the same key
        gets the same noise, and the difference of the two releases cancels it (leaving the
        difference of their key-dependent noise). Derive a key per released batch (e.g.
        derive_key of that batch's digest).

        @throws ParameterError if sigma is not finite, below 1 or above 2^56, or if 64 sigma is
        not below a quarter of the level's modulus (the noise must never wrap it)
        @throws ContextMismatchError for another key set
        @throws LayoutError for a ciphertext without exactly two polynomials
        */
        void decrypt_flooded(
            const EncryptedBatch &batch, double sigma, const std::array<std::uint8_t, 32> &noise_key, double *out,
            int threads) const;

        /**
        A 32-byte key derived from the secret key and a label: BLAKE2b-256 keyed by
        BLAKE2b-512 of the secret key's coefficients, over a fixed domain-separation string and
        label. Every holder of the same secret key derives the same key for the same label; the
        output is a PRF value (BLAKE2b keyed mode) under a one-way hash of the secret key, so
        it reveals nothing about the key beyond that PRF output (one output, or many for
        different labels, does not help recover the key or predict the output of another label).
        The shared-key protocol uses it as the flooding-noise key of an aggregate, the label
        being the aggregate's digest.
        */
        std::array<std::uint8_t, 32> derive_key(std::string_view label) const;

        /**
        Decrypts a compact reply: c0 + c1 s mod 2^bits at the value coefficients only (s taken in
        coefficient form), into a row-major (rows x cols) buffer.

        @throws ContextMismatchError for another key set
        */
        void decrypt(const CompactBatch &batch, double *out, int threads) const;

        /** Secret key material in SEAL's form, for the key holder's own storage and tests. */
        const seal::SecretKey &secret_key() const noexcept { return secret_key_; }

        /** Serialized form (kind SecretContext): public context bytes + secret key. */
        std::string to_bytes() const;
        static std::shared_ptr<SecretContext> from_bytes(std::string_view bytes);

        SecretContext(std::shared_ptr<const PublicContext> public_context, seal::SecretKey secret_key);
        ~SecretContext();
        SecretContext(const SecretContext &) = delete;
        SecretContext &operator=(const SecretContext &) = delete;

    private:
        std::shared_ptr<const PublicContext> public_;
        seal::SecretKey secret_key_;
        /** The ternary secret key in coefficient form (from its first residue), for decrypting
        compact replies coefficient by coefficient; computed once, zeroed on destruction. */
        std::vector<std::int8_t> secret_coefficients_;
    };
} // namespace hevit
