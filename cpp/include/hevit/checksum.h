// Copyright (c) hevit developers. MIT license.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace hevit
{
    /**
    The wire format's payload checksum: four CRC-32C (Castagnoli) lanes over interleaved 8-byte
    words, 16 bytes in all.

    Word i of the payload (bytes 8i .. 8i+7; the last word may be shorter) goes to lane i mod 4;
    each lane is a standard CRC-32C (reflected polynomial 0x82F63B78, initial value and final XOR
    0xFFFFFFFF) of the bytes it receives, stored little endian in lane order. A CRC detects every
    single-bit error and every burst up to 32 bits within its lane; random damage inside one lane
    passes with probability about 2^-32, damage spread over all four lanes about 2^-128 (truncation
    is caught by the header's size field first). It is a checksum, not a MAC (nor was the
    BLAKE2b-128 it replaces in wire format 4, at a tenth of its cost or less): an attacker who
    rewrites bytes rewrites the checksum too, which is why SECURITY.md leaves integrity against
    attackers to TLS.

    x86-64 CPUs with SSE4.2 run the CRC instruction on all four lanes at once (chosen at run
    time); other machines use a portable table-driven path that gives the same bytes.
    */
    using Checksum = std::array<std::uint8_t, 16>;

    Checksum payload_checksum(const void *data, std::size_t size) noexcept;

    namespace detail
    {
        /** The portable path alone (tests compare it with the dispatched one). */
        Checksum payload_checksum_portable(const void *data, std::size_t size) noexcept;
    } // namespace detail
} // namespace hevit
