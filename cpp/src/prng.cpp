// Copyright (c) hevit developers. MIT license.
#include "hevit/prng.h"
#include "hevit/errors.h"
#include "seal/util/blake2.h"
#include "seal/util/uintarithsmallmod.h"
#include <cstring>

namespace hevit
{
    namespace
    {
        constexpr std::uint32_t rotl(std::uint32_t v, int c) noexcept
        {
            return (v << c) | (v >> (32 - c));
        }

        inline void quarter(std::uint32_t &a, std::uint32_t &b, std::uint32_t &c, std::uint32_t &d) noexcept
        {
            a += b;
            d = rotl(d ^ a, 16);
            c += d;
            b = rotl(b ^ c, 12);
            a += b;
            d = rotl(d ^ a, 8);
            c += d;
            b = rotl(b ^ c, 7);
        }

        std::uint32_t load32(const std::uint8_t *p) noexcept
        {
            return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
                   (std::uint32_t(p[3]) << 24);
        }

        /** Four ChaCha20 blocks with counters counter .. counter + 3 from state (words 12 = counter). */
        void four_blocks(const std::array<std::uint32_t, 16> &state, std::uint32_t out[4][16]) noexcept
        {
            std::uint32_t x[16][4];
            for (int i = 0; i < 16; i++)
            {
                for (int lane = 0; lane < 4; lane++)
                {
                    x[i][lane] = state[i];
                }
            }
            for (int lane = 0; lane < 4; lane++)
            {
                x[12][lane] = state[12] + static_cast<std::uint32_t>(lane);
            }
            for (int round = 0; round < 10; round++)
            {
                for (int lane = 0; lane < 4; lane++)
                {
                    quarter(x[0][lane], x[4][lane], x[8][lane], x[12][lane]);
                    quarter(x[1][lane], x[5][lane], x[9][lane], x[13][lane]);
                    quarter(x[2][lane], x[6][lane], x[10][lane], x[14][lane]);
                    quarter(x[3][lane], x[7][lane], x[11][lane], x[15][lane]);
                    quarter(x[0][lane], x[5][lane], x[10][lane], x[15][lane]);
                    quarter(x[1][lane], x[6][lane], x[11][lane], x[12][lane]);
                    quarter(x[2][lane], x[7][lane], x[8][lane], x[13][lane]);
                    quarter(x[3][lane], x[4][lane], x[9][lane], x[14][lane]);
                }
            }
            for (int lane = 0; lane < 4; lane++)
            {
                for (int i = 0; i < 16; i++)
                {
                    const std::uint32_t initial = i == 12 ? state[12] + static_cast<std::uint32_t>(lane) : state[i];
                    out[lane][i] = x[i][lane] + initial;
                }
            }
        }

        std::array<std::uint32_t, 16> initial_state(
            const ChaCha20Stream::Key &key, const std::array<std::uint32_t, 3> &nonce, std::uint32_t counter) noexcept
        {
            std::array<std::uint32_t, 16> s{};
            s[0] = 0x61707865;
            s[1] = 0x3320646e;
            s[2] = 0x79622d32;
            s[3] = 0x6b206574;
            for (int i = 0; i < 8; i++)
            {
                s[4 + i] = load32(key.data() + 4 * i);
            }
            s[12] = counter;
            s[13] = nonce[0];
            s[14] = nonce[1];
            s[15] = nonce[2];
            return s;
        }

        void store_words(const std::uint32_t block[16], std::uint8_t *out) noexcept
        {
            for (int i = 0; i < 16; i++)
            {
                out[4 * i] = static_cast<std::uint8_t>(block[i]);
                out[4 * i + 1] = static_cast<std::uint8_t>(block[i] >> 8);
                out[4 * i + 2] = static_cast<std::uint8_t>(block[i] >> 16);
                out[4 * i + 3] = static_cast<std::uint8_t>(block[i] >> 24);
            }
        }
    } // namespace

    ChaCha20Stream::ChaCha20Stream(const Key &key, std::uint32_t nonce_word) noexcept
        : state_(initial_state(key, { nonce_word, 0x68657669 /* "hevi" */, 0x74703031 /* "tp01" */ }, 0))
    {}

    void ChaCha20Stream::block(
        const Key &key, const std::array<std::uint32_t, 3> &nonce, std::uint32_t counter, std::uint8_t *out) noexcept
    {
        std::uint32_t blocks[4][16];
        four_blocks(initial_state(key, nonce, counter), blocks);
        store_words(blocks[0], out);
    }

    void ChaCha20Stream::refill() noexcept
    {
        std::uint32_t blocks[4][16];
        four_blocks(state_, blocks);
        state_[12] += 4;
        std::uint8_t bytes[256];
        for (int lane = 0; lane < 4; lane++)
        {
            store_words(blocks[lane], bytes + 64 * lane);
        }
        std::memcpy(buffer_.data(), bytes, sizeof bytes); // little-endian machines: words in stream order
        used_ = 0;
    }

    void ChaCha20Stream::fill(std::uint64_t *out, std::size_t count) noexcept
    {
        for (std::size_t i = 0; i < count; i++)
        {
            if (used_ == buffer_.size())
            {
                refill();
            }
            out[i] = buffer_[used_++];
        }
    }

    namespace detail
    {
        ChaCha20Stream::Key seed_key(const seal::prng_seed_type &seed) noexcept
        {
            ChaCha20Stream::Key key{};
            blake2b(key.data(), key.size(), seed.data(), sizeof(seal::prng_seed_type), nullptr, 0);
            return key;
        }

        ChaCha20Stream::Key fresh_key(std::random_device &device)
        {
            ChaCha20Stream::Key key{};
            for (std::size_t i = 0; i < key.size(); i += 4)
            {
                const std::uint32_t word = device();
                std::memcpy(key.data() + i, &word, 4);
            }
            return key;
        }

        void sample_uniform(ChaCha20Stream &stream, const seal::EncryptionParameters &parms, std::uint64_t *out)
        {
            const std::size_t n = parms.poly_modulus_degree();
            const auto &primes = parms.coeff_modulus();
            std::uint64_t words[64];
            for (std::size_t l = 0; l < primes.size(); l++)
            {
                const std::uint64_t q = primes[l].value();
                // the largest multiple of q that fits 64 bits: words at or above it are redrawn
                const std::uint64_t limit = (~std::uint64_t(0) / q) * q;
                std::size_t i = 0;
                while (i < n)
                {
                    stream.fill(words, 64);
                    for (std::size_t w = 0; w < 64 && i < n; w++)
                    {
                        if (words[w] < limit)
                        {
                            out[l * n + i++] = seal::util::barrett_reduce_64(words[w], primes[l]);
                        }
                    }
                }
            }
        }

        void sample_noise(ChaCha20Stream &stream, const seal::EncryptionParameters &parms, std::uint64_t *out)
        {
            const std::size_t n = parms.poly_modulus_degree();
            const auto &primes = parms.coeff_modulus();
            constexpr std::uint64_t half_mask = (std::uint64_t(1) << 21) - 1;
            std::uint64_t words[64];
            for (std::size_t i = 0; i < n; i += 64)
            {
                const std::size_t count = std::min<std::size_t>(64, n - i);
                stream.fill(words, count);
                for (std::size_t w = 0; w < count; w++)
                {
                    const int value = __builtin_popcountll(words[w] & half_mask) -
                                      __builtin_popcountll((words[w] >> 21) & half_mask);
                    for (std::size_t l = 0; l < primes.size(); l++)
                    {
                        const std::uint64_t q = primes[l].value();
                        out[l * n + i + w] = value < 0 ? q - static_cast<std::uint64_t>(-value)
                                                       : static_cast<std::uint64_t>(value);
                    }
                }
                std::fill(words, words + 64, 0);
            }
        }
    } // namespace detail
} // namespace hevit
