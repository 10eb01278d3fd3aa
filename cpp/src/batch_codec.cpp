// Copyright (c) hevit developers. MIT license.
// EncryptedBatch's wire codec: to_bytes, from_bytes (every size checked before anything is
// allocated) and peek; keys have theirs in key_codec.cpp.
#include "hevit/encrypted_batch.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/parallel.h"
#include "hevit/prng.h"
#include <atomic>
#include <cmath>
#include <cstring>

namespace hevit
{
    namespace
    {
        // layout, seeded, 2 reserved (4 x u8), prime count (u32), rows, cols, period (3 x u64),
        // scale, norm bound (2 x f64), ciphertext count (u64)
        constexpr std::size_t batch_metadata_size = 4 + 4 + 3 * 8 + 2 * 8 + 8;

        std::shared_ptr<const seal::SEALContext::ContextData> level_with_primes(
            const seal::SEALContext &context, std::size_t prime_count)
        {
            for (auto cd = context.first_context_data(); cd; cd = cd->next_context_data())
            {
                if (cd->parms().coeff_modulus().size() == prime_count)
                {
                    return cd;
                }
            }
            return nullptr;
        }

        /** The payload's fixed prefix; only the layout code is checked here. */
        BatchMetadata read_metadata(ByteReader &r)
        {
            BatchMetadata meta;
            const std::uint8_t layout_code = r.u8();
            meta.seed_count = r.u8(); // any u8 value is a valid count (max_seeds_per_ciphertext = 255)
            r.u8();
            r.u8();
            if (layout_code != static_cast<std::uint8_t>(Layout::batch) &&
                layout_code != static_cast<std::uint8_t>(Layout::sample) &&
                layout_code != static_cast<std::uint8_t>(Layout::coefficient))
            {
                throw SerializationError("malformed EncryptedBatch: unknown layout code " + std::to_string(layout_code));
            }
            meta.layout = static_cast<Layout>(layout_code);
            meta.prime_count = r.u32();
            meta.rows = r.u64();
            meta.cols = r.u64();
            meta.period = r.u64();
            meta.scale = r.f64();
            meta.norm_bound = r.f64();
            meta.ciphertext_count = r.u64();
            return meta;
        }

        std::size_t packed_poly_bytes(const seal::SEALContext::ContextData &cd)
        {
            std::size_t bytes = 0;
            for (const auto &q : cd.parms().coeff_modulus())
            {
                bytes += packed_size(cd.parms().poly_modulus_degree(), q.bit_count());
            }
            return bytes;
        }
    } // namespace

    std::size_t EncryptedBatch::byte_size() const noexcept
    {
        auto cd = context_->seal_context().get_context_data(ciphertexts_.front().parms_id());
        const std::size_t poly = packed_poly_bytes(*cd);
        const std::size_t per_ct = seeded() ? seed_count() * sizeof(seal::prng_seed_type) + poly : 2 * poly;
        return wire_header_size + batch_metadata_size + ciphertexts_.size() * per_ct;
    }

    std::string EncryptedBatch::to_bytes(int threads) const
    {
        auto cd = context_->seal_context().get_context_data(ciphertexts_.front().parms_id());
        const auto &primes = cd->parms().coeff_modulus();
        const std::size_t n = cd->parms().poly_modulus_degree();
        const std::size_t poly = packed_poly_bytes(*cd);
        const std::size_t k = seed_count();
        const std::size_t per_ct = seeded() ? k * sizeof(seal::prng_seed_type) + poly : 2 * poly;

        ByteWriter w;
        w.str().reserve(byte_size());
        w.str().resize(wire_header_size); // the header is written last, in place
        w.u8(static_cast<std::uint8_t>(layout_));
        w.u8(static_cast<std::uint8_t>(k)); // seeds per ciphertext (0: c1 stored in full)
        w.u8(0);
        w.u8(0);
        w.u32(static_cast<std::uint32_t>(primes.size()));
        w.u64(rows_);
        w.u64(cols_);
        w.u64(period_);
        w.f64(scale());
        w.f64(norm_bound_);
        w.u64(ciphertexts_.size());
        std::string &out = w.str();
        const std::size_t body = out.size();
        out.resize(body + ciphertexts_.size() * per_ct);
        auto *dst = reinterpret_cast<std::uint8_t *>(out.data() + body);
        parallel_for(ciphertexts_.size(), threads, [&](std::size_t i) {
            std::uint8_t *p = dst + i * per_ct;
            const auto &ct = ciphertexts_[i];
            if (seeded())
            {
                std::memcpy(p, seeds_[i * k].data(), k * sizeof(seal::prng_seed_type));
                p += k * sizeof(seal::prng_seed_type);
            }
            for (std::size_t poly_index = 0; poly_index < (seeded() ? 1u : 2u); poly_index++)
            {
                for (std::size_t l = 0; l < primes.size(); l++)
                {
                    pack_bits(ct.data(poly_index) + l * n, n, primes[l].bit_count(), p);
                    p += packed_size(n, primes[l].bit_count());
                }
            }
        });
        WireHeader header{ ObjectKind::encrypted_batch, context_->params_fingerprint(), context_->keyset_id() };
        frame_in_place(header, out);
        return std::move(out);
    }

    EncryptedBatch EncryptedBatch::from_bytes(
        std::string_view bytes, std::shared_ptr<const PublicContext> context, int threads)
    {
        WireHeader header;
        ByteReader r(unwrap_payload(bytes, ObjectKind::encrypted_batch, header));
        if (header.params_fingerprint != context->params_fingerprint())
        {
            throw ContextMismatchError(
                "these EncryptedBatch bytes were made under other CKKS parameters than the given context");
        }
        if (header.keyset_id != context->keyset_id())
        {
            throw ContextMismatchError(
                "these EncryptedBatch bytes were encrypted under another key set than the given context");
        }
        const BatchMetadata meta = read_metadata(r);
        const Layout layout = meta.layout;
        const std::uint8_t seeded = meta.seed_count;
        const std::uint32_t prime_count = meta.prime_count;
        const std::uint64_t rows = meta.rows;
        const std::uint64_t cols = meta.cols;
        const std::uint64_t period = meta.period;
        const double scale = meta.scale;
        const double norm_bound = meta.norm_bound;
        const std::uint64_t count = meta.ciphertext_count;

        const std::size_t n = context->params().poly_modulus_degree;
        const auto cd = level_with_primes(context->seal_context(), prime_count);
        if (!cd)
        {
            throw SerializationError("malformed EncryptedBatch: no level with " + std::to_string(prime_count) + " primes");
        }
        const bool rows_ok = rows >= 1 && rows <= (layout == Layout::batch ? n : max_sample_rows);
        const bool cols_ok = cols >= 1 && cols <= max_cols;
        bool period_ok = false;
        switch (layout)
        {
        case Layout::batch:
            period_ok = period == 0;
            break;
        case Layout::sample:
            // cols first: a declared column count near 2^64 has no power of two above it
            period_ok = cols_ok && period >= next_pow2(cols) && period <= n / 2 && (period & (period - 1)) == 0;
            break;
        case Layout::coefficient:
            // value c sits at coefficient c * period + period - 1 < N
            period_ok = period >= 1 && period <= n && cols <= n / period && prime_count == 1;
            break;
        }
        if (!rows_ok || !cols_ok || !period_ok)
        {
            throw SerializationError("malformed EncryptedBatch: impossible shape or period for this context");
        }
        if (count != ciphertext_count(layout, rows, cols, n))
        {
            throw SerializationError("malformed EncryptedBatch: ciphertext count does not match its shape");
        }
        const double max_log_scale = cd->total_coeff_modulus_bit_count();
        if (!std::isfinite(scale) || !(scale >= 1.0) || std::log2(scale) >= max_log_scale)
        {
            throw SerializationError("malformed EncryptedBatch: scale out of range");
        }
        if (!std::isfinite(norm_bound) || norm_bound < 0.0)
        {
            throw SerializationError("malformed EncryptedBatch: bad norm bound");
        }
        const std::size_t poly = packed_poly_bytes(*cd);
        const std::size_t per_ct = seeded ? seeded * sizeof(seal::prng_seed_type) + poly : 2 * poly;
        if (r.remaining() != count * per_ct)
        {
            throw SerializationError(
                "malformed EncryptedBatch: expected " + std::to_string(count * per_ct) + " ciphertext bytes, found " +
                std::to_string(r.remaining()));
        }
        const auto *src = reinterpret_cast<const std::uint8_t *>(r.raw(count * per_ct).data());
        const auto &primes = cd->parms().coeff_modulus();

        std::vector<seal::Ciphertext> cts(count);
        std::vector<seal::prng_seed_type> seeds(count * seeded);
        std::atomic<bool> bad{ false };
        parallel_for(count, threads, [&](std::size_t i) {
            const std::uint8_t *p = src + i * per_ct;
            auto &ct = cts[i];
            ct.resize(context->seal_context(), cd->parms_id(), 2);
            ct.is_ntt_form() = true;
            ct.scale() = scale;
            if (seeded)
            {
                std::memcpy(seeds[i * seeded].data(), p, seeded * sizeof(seal::prng_seed_type));
                p += seeded * sizeof(seal::prng_seed_type);
            }
            for (std::size_t poly_index = 0; poly_index < (seeded ? 1u : 2u); poly_index++)
            {
                for (std::size_t l = 0; l < primes.size(); l++)
                {
                    if (!unpack_bits(p, n, primes[l].bit_count(), primes[l].value(), ct.data(poly_index) + l * n))
                    {
                        bad = true;
                        return;
                    }
                    p += packed_size(n, primes[l].bit_count());
                }
            }
            if (seeded)
            {
                detail::expand_seeds(context->seal_context(), seeds.data() + i * seeded, seeded, ct);
            }
        });
        if (bad)
        {
            throw SerializationError("malformed EncryptedBatch: a coefficient is not reduced modulo its prime");
        }

        return EncryptedBatch(
            std::move(context), layout, rows, cols, period, norm_bound, std::move(cts), std::move(seeds));
    }

    BatchMetadata EncryptedBatch::peek(std::string_view bytes)
    {
        WireHeader header;
        ByteReader r(peek_payload(bytes, ObjectKind::encrypted_batch, header));
        return read_metadata(r);
    }
} // namespace hevit
