// Copyright (c) hevit developers. MIT license.
#include "hevit/wire.h"
#include "hevit/checksum.h"
#include "hevit/errors.h"
#include "seal/util/blake2.h"
#include <cstring>

namespace hevit
{
    namespace
    {
        constexpr char magic[4] = { 'H', 'E', 'V', 'T' };
    }

    const char *object_kind_name(ObjectKind kind) noexcept
    {
        switch (kind)
        {
        case ObjectKind::public_context:
            return "PublicContext";
        case ObjectKind::secret_context:
            return "SecretContext";
        case ObjectKind::encrypted_batch:
            return "EncryptedBatch";
        case ObjectKind::compact_batch:
            return "CompactBatch";
        }
        return "unknown object";
    }

    Digest digest16(const void *data, std::size_t size)
    {
        Digest out{};
        if (::blake2b(out.data(), out.size(), data, size, nullptr, 0) != 0)
        {
            throw std::runtime_error("BLAKE2b failed");
        }
        return out;
    }

    void frame_in_place(const WireHeader &header, std::string &framed)
    {
        if (framed.size() < wire_header_size)
        {
            throw std::logic_error("frame_in_place: no room for the header");
        }
        const std::string_view payload(framed.data() + wire_header_size, framed.size() - wire_header_size);
        ByteWriter w;
        w.raw(magic, sizeof magic);
        const std::uint16_t version = wire_format_version;
        w.raw(&version, sizeof version);
        w.u8(static_cast<std::uint8_t>(header.kind));
        w.u8(0);
        w.raw(header.params_fingerprint.data(), header.params_fingerprint.size());
        w.raw(header.keyset_id.data(), header.keyset_id.size());
        w.u64(payload.size());
        const Checksum checksum = payload_checksum(payload.data(), payload.size());
        w.raw(checksum.data(), checksum.size());
        std::memcpy(framed.data(), w.str().data(), wire_header_size);
    }

    std::string wrap_payload(const WireHeader &header, std::string_view payload)
    {
        std::string framed;
        framed.reserve(wire_header_size + payload.size());
        framed.resize(wire_header_size);
        framed.append(payload.data(), payload.size());
        frame_in_place(header, framed);
        return framed;
    }

    std::string_view peek_payload(std::string_view bytes, ObjectKind expected_kind, WireHeader &header)
    {
        const std::string expected = object_kind_name(expected_kind);
        if (bytes.size() < wire_header_size)
        {
            throw SerializationError(
                "truncated bytes: " + std::to_string(bytes.size()) + " bytes is shorter than the " +
                std::to_string(wire_header_size) + "-byte hevit header of a " + expected);
        }
        if (std::memcmp(bytes.data(), magic, sizeof magic) != 0)
        {
            throw SerializationError("not hevit bytes (bad magic); expected a serialized " + expected);
        }
        ByteReader r(bytes.substr(4, wire_header_size - 4));
        std::uint16_t version = 0;
        std::memcpy(&version, r.raw(2).data(), 2);
        if (version != wire_format_version)
        {
            throw SerializationError(
                "unsupported hevit format version " + std::to_string(version) + " (this build reads version " +
                std::to_string(wire_format_version) + "); upgrade hevit or re-serialize");
        }
        const auto kind = static_cast<ObjectKind>(r.u8());
        if (kind != expected_kind)
        {
            throw SerializationError(
                std::string("wrong object kind: these bytes hold a ") + object_kind_name(kind) + ", expected a " +
                expected);
        }
        if (r.u8() != 0)
        {
            throw SerializationError("corrupted header: reserved byte is not zero");
        }
        header.kind = kind;
        std::memcpy(header.params_fingerprint.data(), r.raw(16).data(), 16);
        std::memcpy(header.keyset_id.data(), r.raw(16).data(), 16);
        const std::uint64_t payload_size = r.u64();
        if (payload_size != bytes.size() - wire_header_size)
        {
            throw SerializationError(
                "truncated or padded bytes: header announces " + std::to_string(payload_size) +
                " payload bytes but " + std::to_string(bytes.size() - wire_header_size) + " follow");
        }
        return bytes.substr(wire_header_size);
    }

    std::string_view unwrap_payload(std::string_view bytes, ObjectKind expected_kind, WireHeader &header)
    {
        const std::string_view payload = peek_payload(bytes, expected_kind, header);
        Checksum checksum{};
        std::memcpy(checksum.data(), bytes.data() + wire_header_size - checksum.size(), checksum.size());
        if (payload_checksum(payload.data(), payload.size()) != checksum)
        {
            throw SerializationError(
                std::string("corrupted bytes: payload checksum mismatch in a serialized ") +
                object_kind_name(expected_kind));
        }
        return payload;
    }

    std::string_view ByteReader::raw(std::size_t size)
    {
        if (size > remaining())
        {
            throw SerializationError("truncated payload: needed " + std::to_string(size) + " more bytes");
        }
        std::string_view out = in_.substr(pos_, size);
        pos_ += size;
        return out;
    }

    std::uint8_t ByteReader::u8()
    {
        return static_cast<std::uint8_t>(raw(1)[0]);
    }

    std::uint32_t ByteReader::u32()
    {
        std::uint32_t v;
        std::memcpy(&v, raw(sizeof v).data(), sizeof v);
        return v;
    }

    std::uint64_t ByteReader::u64()
    {
        std::uint64_t v;
        std::memcpy(&v, raw(sizeof v).data(), sizeof v);
        return v;
    }

    std::int32_t ByteReader::i32()
    {
        std::int32_t v;
        std::memcpy(&v, raw(sizeof v).data(), sizeof v);
        return v;
    }

    double ByteReader::f64()
    {
        double v;
        std::memcpy(&v, raw(sizeof v).data(), sizeof v);
        return v;
    }

    std::string_view ByteReader::blob(std::size_t max_size)
    {
        const std::uint64_t size = u64();
        if (size > max_size || size > remaining())
        {
            throw SerializationError(
                "malformed payload: a field announces " + std::to_string(size) + " bytes, more than allowed (" +
                std::to_string(std::min<std::size_t>(max_size, remaining())) + ")");
        }
        return raw(static_cast<std::size_t>(size));
    }

    void ByteReader::expect_end() const
    {
        if (remaining() != 0)
        {
            throw SerializationError("malformed payload: " + std::to_string(remaining()) + " trailing bytes");
        }
    }

    namespace
    {
        // The packed stream is little-endian: bit k of the stream is bit k % 8 of byte k / 8.
        inline void store_le64(std::uint64_t word, std::uint8_t *out) noexcept
        {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            std::memcpy(out, &word, 8);
#else
            for (int b = 0; b < 8; b++)
            {
                out[b] = static_cast<std::uint8_t>(word >> (8 * b));
            }
#endif
        }

        inline std::uint64_t load_le64(const std::uint8_t *in) noexcept
        {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            std::uint64_t word;
            std::memcpy(&word, in, 8);
            return word;
#else
            std::uint64_t word = 0;
            for (int b = 0; b < 8; b++)
            {
                word |= static_cast<std::uint64_t>(in[b]) << (8 * b);
            }
            return word;
#endif
        }
    } // namespace

    void pack_bits(const std::uint64_t *values, std::size_t count, int bits, std::uint8_t *out) noexcept
    {
        // a 64-bit word is written whenever one is full (values are < 2^bits, so nothing spills)
        unsigned __int128 acc = 0;
        int filled = 0;
        std::size_t o = 0;
        for (std::size_t i = 0; i < count; i++)
        {
            acc |= static_cast<unsigned __int128>(values[i]) << filled;
            filled += bits;
            if (filled >= 64)
            {
                store_le64(static_cast<std::uint64_t>(acc), out + o);
                o += 8;
                acc >>= 64;
                filled -= 64;
            }
        }
        for (; filled > 0; filled -= 8)
        {
            out[o++] = static_cast<std::uint8_t>(acc);
            acc >>= 8;
        }
    }

    bool unpack_bits(const std::uint8_t *in, std::size_t count, int bits, std::uint64_t bound, std::uint64_t *values) noexcept
    {
        const std::uint64_t mask = bits == 64 ? ~std::uint64_t(0) : ((std::uint64_t(1) << bits) - 1);
        const std::size_t total = packed_size(count, bits);
        unsigned __int128 acc = 0;
        int filled = 0;
        std::size_t p = 0;
        bool ok = true;
        for (std::size_t i = 0; i < count; i++)
        {
            if (filled < bits)
            {
                if (p + 8 <= total)
                {
                    acc |= static_cast<unsigned __int128>(load_le64(in + p)) << filled;
                    filled += 64;
                    p += 8;
                }
                else
                {
                    // the stream's last bytes: never read past its end
                    for (; filled < bits; filled += 8)
                    {
                        acc |= static_cast<unsigned __int128>(in[p++]) << filled;
                    }
                }
            }
            const std::uint64_t v = static_cast<std::uint64_t>(acc) & mask;
            acc >>= bits;
            filled -= bits;
            ok &= v < bound;
            values[i] = v;
        }
        // Every byte of the stream has been read; the unused high bits of the last byte must be
        // zero, so every flipped bit is detected.
        if (filled > 0 && acc != 0)
        {
            ok = false;
        }
        return ok;
    }
} // namespace hevit
