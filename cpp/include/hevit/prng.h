// Copyright (c) hevit developers. MIT license.
#pragma once

#include "seal/seal.h"
#include <array>
#include <cstddef>
#include <cstdint>
#include <random>

namespace hevit
{
    /**
    The ChaCha20 stream cipher (RFC 8439) as a pseudorandom generator: a 256-bit key, a 96-bit
    nonce and a 32-bit block counter give 64 bytes per block. hevit expands public seeds into
    the uniform c1 of seeded ciphertexts with it and draws encryption noise from it (keyed by OS
    entropy), in place of SEAL's Blake2xb generator, which spent about half of an encryption. The
    code is portable C++ (eight independent blocks per step, which compilers vectorise; on x86-64
    Linux an AVX2 copy is chosen at load time); every machine expands a seed to the same bytes.
    */
    class ChaCha20Stream
    {
    public:
        using Key = std::array<std::uint8_t, 32>;
        /** Blocks computed per refill (one vector lane each). */
        static constexpr int blocks_per_refill = 8;

        ChaCha20Stream(const Key &key, std::uint32_t nonce_word) noexcept;

        /** Writes the next count 64-bit words of the stream (little endian). */
        void fill(std::uint64_t *out, std::size_t count) noexcept;

        /** The 64-byte block with this counter (for tests against RFC 8439 vectors). */
        static void block(const Key &key, const std::array<std::uint32_t, 3> &nonce, std::uint32_t counter,
                          std::uint8_t *out) noexcept;

    private:
        void refill() noexcept;

        std::array<std::uint32_t, 16> state_{};
        std::array<std::uint64_t, 8 * blocks_per_refill> buffer_{};
        std::size_t used_ = 8 * blocks_per_refill;
    };

    namespace detail
    {
        /** The ChaCha20 key of a public seed: BLAKE2b-256 of its 64 bytes (all seed bits count). */
        ChaCha20Stream::Key seed_key(const seal::prng_seed_type &seed) noexcept;

        /**
        Fills out with the operating system's entropy: getrandom(2) on Linux (blocking only until
        the kernel's pool is initialised), std::random_device elsewhere.

        @throws std::system_error if the kernel refuses
        */
        void os_random(void *out, std::size_t size);

        /** A key from the operating system's entropy (for encryption noise). */
        ChaCha20Stream::Key fresh_key();

        /**
        Uniform residues mod each prime of the level, n per prime, written limb after limb:
        rejection sampling of 64-bit words below the largest multiple of q, then reduction.
        */
        void sample_uniform(ChaCha20Stream &stream, const seal::EncryptionParameters &parms, std::uint64_t *out);

        /** Regenerates c1 of a seeded ciphertext from its seed (the same expansion encryption used). */
        void expand_seed(const seal::SEALContext &context, const seal::prng_seed_type &seed, seal::Ciphertext &ct);

        /** c1 = sum of the expansions of `count` seeds (a sum of fresh seeded ciphertexts). */
        void expand_seeds(
            const seal::SEALContext &context, const seal::prng_seed_type *seeds, std::size_t count, seal::Ciphertext &ct);

        /**
        Centred binomial noise with 21 + 21 bits (std sqrt(10.5), SEAL's distribution), the same
        value reduced into every prime of the level, n per prime, limb after limb.
        */
        void sample_noise(ChaCha20Stream &stream, const seal::EncryptionParameters &parms, std::uint64_t *out);
    } // namespace detail
} // namespace hevit
