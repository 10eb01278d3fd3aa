// Copyright (c) hevit developers. MIT license.
#pragma once

#include "hevit/encrypted_batch.h"
#include "hevit/public_context.h"
#include "hevit/secret_context.h"
#include <array>
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
    need noise flooding. Nothing here touches a secret key, except decrypted_residues, the key
    holder's own view that the flooding tests compare with (it takes a SecretContext).
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

        /**
        What an active server can make from public material: a copy of batch (c1 stored in full)
        whose every c1 has amount * X^coefficient added. Decrypting it adds amount * X^coefficient * s
        to the message, which is how a server that can get arbitrary ciphertexts decrypted reads
        the secret key (the attack the key holder's verification refuses).

        @throws std::invalid_argument if coefficient >= N
        */
        static EncryptedBatch shift_c1(const EncryptedBatch &batch, std::size_t coefficient, std::uint64_t amount);

        /**
        Key holder's view, for tests: the decrypted plaintext polynomial of ciphertext `index` in
        coefficient form, residue after residue (prime_count * N values, the primes of its level),
        exact when sigma == 0, otherwise flooded exactly as SecretContext::decrypt_flooded floods
        it (the same samples for the same noise_key).

        @throws std::invalid_argument if index is out of range; as decrypt_flooded otherwise
        */
        static std::vector<std::uint64_t> decrypted_residues(
            const SecretContext &secret, const EncryptedBatch &batch, std::size_t index, double sigma,
            const std::array<std::uint8_t, 32> &noise_key);

        /**
        count samples of DiscreteGaussian(sigma) drawn from ChaCha20Stream(key, nonce_word).

        @throws ParameterError as DiscreteGaussian; std::invalid_argument for a sample outside
        the int64 range (probability below exp(-8000))
        */
        static std::vector<std::int64_t> discrete_gaussian_samples(
            double sigma, const std::array<std::uint8_t, 32> &key, std::uint32_t nonce_word, std::size_t count);
    };
} // namespace hevit
