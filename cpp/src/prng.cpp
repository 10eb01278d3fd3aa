// Copyright (c) hevit developers. MIT license.
#include "hevit/prng.h"
#include "hevit/errors.h"
#include "seal/util/blake2.h"
#include "seal/util/polyarithsmallmod.h"
#include "seal/util/uintarithsmallmod.h"
#include <algorithm>
#include <cerrno>
#include <system_error>
#if defined(__linux__)
#include <sys/random.h>
#endif
#include <bitset>
#include <cstring>

namespace hevit
{
    namespace
    {
        std::uint32_t load32(const std::uint8_t *p) noexcept
        {
            return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
                   (std::uint32_t(p[3]) << 24);
        }

        constexpr int lanes = ChaCha20Stream::blocks_per_refill;

        // Eight independent blocks per step, one vector lane each (GCC/Clang vector extensions,
        // which hevit already needs for __int128: two SSE2 registers per state word on any
        // x86-64, one AVX2 register in the clone below, NEON on ARM). On x86-64 Linux an AVX2
        // copy of eight_blocks is also built and picked at load time from the CPU (ifunc).
        typedef std::uint32_t lane_vector __attribute__((vector_size(4 * lanes)));

#define HEVIT_ROTL(v, c) (((v) << (c)) | ((v) >> (32 - (c))))

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__AVX2__)
        __attribute__((target_clones("avx2", "default")))
#endif
        void eight_blocks(const std::array<std::uint32_t, 16> &state, std::uint32_t out[lanes][16]) noexcept
        {
            lane_vector initial[16];
            for (int i = 0; i < 16; i++)
            {
                for (int lane = 0; lane < lanes; lane++)
                {
                    initial[i][lane] = state[i] + (i == 12 ? static_cast<std::uint32_t>(lane) : 0u);
                }
            }
            lane_vector x[16];
            for (int i = 0; i < 16; i++)
            {
                x[i] = initial[i];
            }
#define HEVIT_QUARTER(a, b, c, d)                                                                                      \
    x[a] += x[b];                                                                                                      \
    x[d] = HEVIT_ROTL(x[d] ^ x[a], 16);                                                                                \
    x[c] += x[d];                                                                                                      \
    x[b] = HEVIT_ROTL(x[b] ^ x[c], 12);                                                                                \
    x[a] += x[b];                                                                                                      \
    x[d] = HEVIT_ROTL(x[d] ^ x[a], 8);                                                                                 \
    x[c] += x[d];                                                                                                      \
    x[b] = HEVIT_ROTL(x[b] ^ x[c], 7);
            for (int round = 0; round < 10; round++)
            {
                HEVIT_QUARTER(0, 4, 8, 12)
                HEVIT_QUARTER(1, 5, 9, 13)
                HEVIT_QUARTER(2, 6, 10, 14)
                HEVIT_QUARTER(3, 7, 11, 15)
                HEVIT_QUARTER(0, 5, 10, 15)
                HEVIT_QUARTER(1, 6, 11, 12)
                HEVIT_QUARTER(2, 7, 8, 13)
                HEVIT_QUARTER(3, 4, 9, 14)
            }
#undef HEVIT_QUARTER
#undef HEVIT_ROTL
            for (int i = 0; i < 16; i++)
            {
                const lane_vector sum = x[i] + initial[i];
                for (int lane = 0; lane < lanes; lane++)
                {
                    out[lane][i] = sum[lane];
                }
            }
        }

        /** Set bits of a 64-bit word without a libgcc call on CPUs compiled for without POPCNT. */
        inline int popcount64(std::uint64_t v) noexcept
        {
#if defined(__POPCNT__) || !(defined(__GNUC__) || defined(__clang__))
            return static_cast<int>(std::bitset<64>(v).count());
#else
            v = v - ((v >> 1) & 0x5555555555555555ULL);
            v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
            v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
            return static_cast<int>((v * 0x0101010101010101ULL) >> 56);
#endif
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
        std::uint32_t blocks[lanes][16];
        eight_blocks(initial_state(key, nonce, counter), blocks);
        store_words(blocks[0], out);
    }

    void ChaCha20Stream::refill() noexcept
    {
        std::uint32_t blocks[lanes][16];
        eight_blocks(state_, blocks);
        state_[12] += lanes;
        static_assert(sizeof blocks == sizeof buffer_, "a refill is eight blocks");
        // The stream's 64-bit words are its bytes read little endian.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        std::memcpy(buffer_.data(), blocks, sizeof blocks); // the block words already are those bytes
#else
        std::uint8_t bytes[64 * lanes];
        for (int lane = 0; lane < lanes; lane++)
        {
            store_words(blocks[lane], bytes + 64 * lane);
        }
        for (std::size_t w = 0; w < buffer_.size(); w++)
        {
            std::uint64_t word = 0;
            for (int b = 7; b >= 0; b--)
            {
                word = (word << 8) | bytes[8 * w + static_cast<std::size_t>(b)];
            }
            buffer_[w] = word;
        }
#endif
        used_ = 0;
    }

    void ChaCha20Stream::fill(std::uint64_t *out, std::size_t count) noexcept
    {
        while (count > 0)
        {
            if (used_ == buffer_.size())
            {
                refill();
            }
            const std::size_t take = std::min(count, buffer_.size() - used_);
            std::memcpy(out, buffer_.data() + used_, take * sizeof(std::uint64_t));
            used_ += take;
            out += take;
            count -= take;
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

        void os_random(void *out, std::size_t size)
        {
            auto *p = static_cast<std::uint8_t *>(out);
#if defined(__linux__)
            // one getrandom(2) call per request instead of one per 4-byte std::random_device draw
            while (size > 0)
            {
                const ssize_t got = ::getrandom(p, size, 0);
                if (got < 0)
                {
                    if (errno == EINTR)
                    {
                        continue;
                    }
                    throw std::system_error(errno, std::generic_category(), "getrandom");
                }
                p += got;
                size -= static_cast<std::size_t>(got);
            }
#else
            std::random_device device;
            for (std::size_t i = 0; i < size; i += 4)
            {
                const std::uint32_t word = device();
                std::memcpy(p + i, &word, std::min<std::size_t>(4, size - i));
            }
#endif
        }

        ChaCha20Stream::Key fresh_key()
        {
            ChaCha20Stream::Key key{};
            os_random(key.data(), key.size());
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
                    const int value =
                        popcount64(words[w] & half_mask) - popcount64((words[w] >> 21) & half_mask);
                    for (std::size_t l = 0; l < primes.size(); l++)
                    {
                        const std::uint64_t q = primes[l].value();
                        // value mod q without a branch (the sign is random: a branch mispredicts half the time)
                        const std::uint64_t negative = 0 - static_cast<std::uint64_t>(value < 0);
                        out[l * n + i + w] = static_cast<std::uint64_t>(static_cast<std::int64_t>(value)) + (q & negative);
                    }
                }
                std::fill(words, words + 64, 0);
            }
        }

        void expand_seed(const seal::SEALContext &context, const seal::prng_seed_type &seed, seal::Ciphertext &ct)
        {
            auto cd = context.get_context_data(ct.parms_id());
            ChaCha20Stream stream(seed_key(seed), 1);
            sample_uniform(stream, cd->parms(), ct.data(1));
        }

        void expand_seeds(
            const seal::SEALContext &context, const seal::prng_seed_type *seeds, std::size_t count, seal::Ciphertext &ct)
        {
            expand_seed(context, seeds[0], ct);
            if (count == 1)
            {
                return;
            }
            auto cd = context.get_context_data(ct.parms_id());
            const auto &parms = cd->parms();
            const std::size_t n = parms.poly_modulus_degree();
            const auto &primes = parms.coeff_modulus();
            std::vector<std::uint64_t> term(n * primes.size());
            for (std::size_t j = 1; j < count; j++)
            {
                ChaCha20Stream stream(seed_key(seeds[j]), 1);
                sample_uniform(stream, parms, term.data());
                for (std::size_t l = 0; l < primes.size(); l++)
                {
                    seal::util::add_poly_coeffmod(term.data() + l * n, ct.data(1) + l * n, n, primes[l], ct.data(1) + l * n);
                }
            }
        }
    } // namespace detail
} // namespace hevit
