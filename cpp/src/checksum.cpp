// Copyright (c) hevit developers. MIT license.
#include "hevit/checksum.h"
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HEVIT_CRC32C_HARDWARE 1
#include <nmmintrin.h>
#endif

namespace hevit
{
    namespace
    {
        constexpr int lanes = 4;
        constexpr std::size_t word = 8;
        constexpr std::size_t stripe = lanes * word;

        /** Slicing-by-8 tables of the reflected CRC-32C polynomial (built once, at compile time). */
        struct Crc32cTables
        {
            std::uint32_t t[8][256];

            constexpr Crc32cTables() : t{}
            {
                for (std::uint32_t b = 0; b < 256; b++)
                {
                    std::uint32_t crc = b;
                    for (int k = 0; k < 8; k++)
                    {
                        crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
                    }
                    t[0][b] = crc;
                }
                for (std::uint32_t b = 0; b < 256; b++)
                {
                    for (int s = 1; s < 8; s++)
                    {
                        t[s][b] = (t[s - 1][b] >> 8) ^ t[0][t[s - 1][b] & 0xFFu];
                    }
                }
            }
        };

        constexpr Crc32cTables tables{};

        inline std::uint32_t crc_byte(std::uint32_t crc, std::uint8_t byte) noexcept
        {
            return (crc >> 8) ^ tables.t[0][(crc ^ byte) & 0xFFu];
        }

        inline std::uint32_t crc_word(std::uint32_t crc, const std::uint8_t *p) noexcept
        {
            // eight bytes at once (slicing-by-8): byte k of the word meets table 7 - k
            const std::uint32_t lo = crc ^ (std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) |
                                            (std::uint32_t(p[2]) << 16) | (std::uint32_t(p[3]) << 24));
            return tables.t[7][lo & 0xFFu] ^ tables.t[6][(lo >> 8) & 0xFFu] ^ tables.t[5][(lo >> 16) & 0xFFu] ^
                   tables.t[4][lo >> 24] ^ tables.t[3][p[4]] ^ tables.t[2][p[5]] ^ tables.t[1][p[6]] ^
                   tables.t[0][p[7]];
        }

        /** Lanes after every whole stripe; the rest (size % 32 bytes) is finished by finish(). */
        void finish(std::uint32_t crc[lanes], const std::uint8_t *p, std::size_t size, std::size_t done, Checksum &out) noexcept
        {
            for (std::size_t i = done; i < size; i++)
            {
                const std::size_t lane = (i / word) % lanes;
                crc[lane] = crc_byte(crc[lane], p[i]);
            }
            for (int lane = 0; lane < lanes; lane++)
            {
                const std::uint32_t value = ~crc[lane];
                for (int b = 0; b < 4; b++)
                {
                    out[4 * lane + b] = static_cast<std::uint8_t>(value >> (8 * b));
                }
            }
        }

#if HEVIT_CRC32C_HARDWARE
        __attribute__((target("sse4.2"))) Checksum checksum_sse42(const std::uint8_t *p, std::size_t size) noexcept
        {
            std::uint64_t crc[lanes] = { 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu };
            const std::size_t whole = size - size % stripe;
            for (std::size_t i = 0; i < whole; i += stripe)
            {
                // four independent CRC chains hide the instruction's latency
                for (int lane = 0; lane < lanes; lane++)
                {
                    std::uint64_t v;
                    std::memcpy(&v, p + i + lane * word, word); // x86 is little endian
                    crc[lane] = _mm_crc32_u64(crc[lane], v);
                }
            }
            std::uint32_t lanes32[lanes];
            for (int lane = 0; lane < lanes; lane++)
            {
                lanes32[lane] = static_cast<std::uint32_t>(crc[lane]);
            }
            Checksum out{};
            finish(lanes32, p, size, whole, out);
            return out;
        }
#endif
    } // namespace

    namespace detail
    {
        Checksum payload_checksum_portable(const void *data, std::size_t size) noexcept
        {
            const auto *p = static_cast<const std::uint8_t *>(data);
            std::uint32_t crc[lanes] = { 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu };
            const std::size_t whole = size - size % stripe;
            for (std::size_t i = 0; i < whole; i += stripe)
            {
                for (int lane = 0; lane < lanes; lane++)
                {
                    crc[lane] = crc_word(crc[lane], p + i + lane * word);
                }
            }
            Checksum out{};
            finish(crc, p, size, whole, out);
            return out;
        }
    } // namespace detail

    Checksum payload_checksum(const void *data, std::size_t size) noexcept
    {
#if HEVIT_CRC32C_HARDWARE
        static const bool sse42 = __builtin_cpu_supports("sse4.2");
        if (sse42)
        {
            return checksum_sse42(static_cast<const std::uint8_t *>(data), size);
        }
#endif
        return detail::payload_checksum_portable(data, size);
    }
} // namespace hevit
