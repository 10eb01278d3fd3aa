// Copyright (c) hevit developers. MIT license.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

/**
The hevit wire format: every serialized object is a fixed header followed by a payload.

    offset size  field
    0      4     magic "HEVT"
    4      2     format version (little endian), currently 4
    6      1     object kind (ObjectKind)
    7      1     reserved, 0
    8      16    parameter fingerprint (BLAKE2b-128 of the canonical parameter encoding)
    24     16    key-set id (BLAKE2b-128 of every key: public, Galois, relinearisation), zero
                 for objects without keys
    40     8     payload size in bytes
    48     16    payload checksum (checksum.h: four CRC-32C lanes), catches truncation and
                 accidental corruption
    64     ...   payload

The checksum is not a MAC: integrity against an active attacker is the transport's job (TLS).
Loaders check the header before they allocate anything sized by the payload.
*/
namespace hevit
{
    using Digest = std::array<std::uint8_t, 16>;

    enum class ObjectKind : std::uint8_t
    {
        public_context = 1,
        secret_context = 2,
        encrypted_batch = 3,
        compact_batch = 4,
    };

    const char *object_kind_name(ObjectKind kind) noexcept;

    /**
    3: keys in hevit's own format (key_codec.h) and key-set ids over every key.
    4: the payload checksum is four CRC-32C lanes (checksum.h) instead of BLAKE2b-128.
    */
    constexpr std::uint16_t wire_format_version = 4;
    constexpr std::size_t wire_header_size = 64;

    struct WireHeader
    {
        ObjectKind kind{};
        Digest params_fingerprint{};
        Digest keyset_id{};
    };

    /** BLAKE2b with a 16-byte digest (identities: parameter fingerprints and key-set ids). */
    Digest digest16(const void *data, std::size_t size);

    /** Prepends the header (with payload size and checksum) to payload. */
    std::string wrap_payload(const WireHeader &header, std::string_view payload);

    /**
    Writes the header into the first wire_header_size bytes of framed, which the caller left free
    before the payload (large objects serialize without copying their payload again).
    */
    void frame_in_place(const WireHeader &header, std::string &framed);

    /**
    Checks magic, version, kind, size and checksum and returns the payload.

    @throws SerializationError on any mismatch, naming the problem
    */
    std::string_view unwrap_payload(std::string_view bytes, ObjectKind expected_kind, WireHeader &header);

    /**
    The checks of unwrap_payload except the checksum (magic, version, kind, reserved byte, declared
    size): for reading a few metadata bytes before deciding to spend a checksum pass.

    @throws SerializationError as unwrap_payload
    */
    std::string_view peek_payload(std::string_view bytes, ObjectKind expected_kind, WireHeader &header);

    /** Appends little-endian fixed-width values and byte strings. */
    class ByteWriter
    {
    public:
        void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
        void u32(std::uint32_t v) { raw(&v, sizeof v); }
        void u64(std::uint64_t v) { raw(&v, sizeof v); }
        void i32(std::int32_t v) { raw(&v, sizeof v); }
        void f64(double v) { raw(&v, sizeof v); }
        void raw(const void *data, std::size_t size) { out_.append(static_cast<const char *>(data), size); }
        void blob(std::string_view bytes)
        {
            u64(bytes.size());
            out_.append(bytes.data(), bytes.size());
        }
        std::string &str() noexcept { return out_; }

    private:
        std::string out_;
    };

    /** Reads what ByteWriter wrote; every read is bounds-checked and throws SerializationError. */
    class ByteReader
    {
    public:
        explicit ByteReader(std::string_view in) : in_(in) {}
        std::uint8_t u8();
        std::uint32_t u32();
        std::uint64_t u64();
        std::int32_t i32();
        double f64();
        std::string_view raw(std::size_t size);
        /** A length-prefixed byte string of at most max_size bytes. */
        std::string_view blob(std::size_t max_size);
        std::size_t remaining() const noexcept { return in_.size() - pos_; }
        void expect_end() const;

    private:
        std::string_view in_;
        std::size_t pos_ = 0;
    };

    /** Bytes needed to bit-pack count values of bits bits each. */
    constexpr std::size_t packed_size(std::size_t count, int bits) noexcept
    {
        return (count * static_cast<std::size_t>(bits) + 7) / 8;
    }

    /** Packs count values, each < 2^bits, into packed_size(count, bits) bytes at out. */
    void pack_bits(const std::uint64_t *values, std::size_t count, int bits, std::uint8_t *out) noexcept;

    /**
    Unpacks count values of bits bits each from in. Returns false if a value is >= bound (so a
    corrupted coefficient can never become an out-of-range residue).
    */
    bool unpack_bits(const std::uint8_t *in, std::size_t count, int bits, std::uint64_t bound, std::uint64_t *values) noexcept;
} // namespace hevit
