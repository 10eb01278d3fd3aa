// Copyright (c) hevit developers. MIT license.
#include "hevit/compact_batch.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/parallel.h"
#include "seal/util/ntt.h"
#include <algorithm>
#include <cmath>

namespace hevit
{
    namespace
    {
        /** Most rows one compact batch may hold (bounds memory from one serialized header). */
        constexpr std::size_t max_compact_rows = std::size_t(1) << 16;
        /** rows, cols, period (3 x u64), bits (u32), unit, norm bound (2 x f64) */
        constexpr std::size_t compact_metadata_size = 3 * 8 + 4 + 2 * 8;
        constexpr int min_bits = 8;

        const seal::SEALContext::ContextData &one_prime_level(const PublicContext &context)
        {
            const auto cd = context.seal_context().get_context_data(context.data_parms_id());
            if (cd->parms().coeff_modulus().size() != 1)
            {
                throw LayoutError("compact batches need one data prime (the coefficient layout's parameters)");
            }
            return *cd;
        }

        /**
        round(c 2^bits / q) mod 2^bits without 128-bit division or 128-bit conversions (library
        calls that cost a third of the reply): a double-precision quotient, off by at most about
        2^(bits - 52) + 1 units (one or none for the 31 to 35 bits replies use), corrected exactly
        from its 128-bit remainder.
        */
        std::uint64_t switch_modulus(std::uint64_t c, std::uint64_t q, double ratio, int bits) noexcept
        {
            const __int128 scaled = static_cast<__int128>((static_cast<unsigned __int128>(c) << bits) + (q >> 1));
            const __int128 modulus = static_cast<__int128>(q);
            // rounded estimate: exact but for values within double precision of a half unit, so
            // the corrections below almost never run (and their branches predict)
            std::uint64_t quotient = static_cast<std::uint64_t>(static_cast<double>(c) * ratio + 0.5);
            __int128 remainder = scaled - static_cast<__int128>(quotient) * modulus;
            while (remainder < 0)
            {
                quotient--;
                remainder += modulus;
            }
            while (remainder >= modulus)
            {
                quotient++;
                remainder -= modulus;
            }
            return quotient & ((std::uint64_t(1) << bits) - 1);
        }
    } // namespace

    CompactBatch CompactBatch::from_batch(const EncryptedBatch &batch, int threads)
    {
        if (batch.layout() != Layout::coefficient)
        {
            throw LayoutError("only coefficient-layout batches have a compact form");
        }
        const auto &cd = one_prime_level(*batch.context());
        if (batch.prime_count() != 1)
        {
            throw LayoutError("compact batches are made at the one data prime of the coefficient layout");
        }
        const std::size_t n = cd.parms().poly_modulus_degree();
        CompactBatch out = sized(batch.context(), batch.rows(), batch.cols(), batch.period(), batch.scale(), batch.norm_bound());
        const auto &cts = batch.ciphertexts();
        const auto *tables = cd.small_ntt_tables();
        parallel_for(cts.size(), threads, [&](std::size_t m) {
            std::vector<std::uint64_t> c0(cts[m].data(0), cts[m].data(0) + n);
            detail::inverse_ntt(c0.data(), tables[0]);
            std::vector<std::uint64_t> values(out.cols_);
            for (std::size_t c = 0; c < out.cols_; c++)
            {
                values[c] = c0[c * out.period_ + out.period_ - 1];
            }
            std::vector<std::uint64_t> c1(cts[m].data(1), cts[m].data(1) + n);
            detail::inverse_ntt(c1.data(), tables[0]);
            out.switch_row(m, values.data(), c1.data());
        });
        return out;
    }

    CompactBatch CompactBatch::sized(
        std::shared_ptr<const PublicContext> context, std::size_t rows, std::size_t cols, std::size_t period,
        double scale, double norm_bound)
    {
        const auto &cd = one_prime_level(*context);
        const std::size_t n = cd.parms().poly_modulus_degree();
        const std::uint64_t q = cd.parms().coeff_modulus().front().value();
        const double q_bits = std::log2(static_cast<double>(q));
        const int max_bits = static_cast<int>(std::floor(q_bits));
        // round as finely as the inputs were encoded: a unit of at most 2^-scale_bits in value units
        const int precision_bits = context->params().scale_bits;
        const int bits = std::clamp(
            static_cast<int>(std::ceil(q_bits - std::log2(scale))) + precision_bits, min_bits, max_bits);
        CompactBatch out;
        out.context_ = std::move(context);
        out.rows_ = rows;
        out.cols_ = cols;
        out.period_ = period;
        out.bits_ = bits;
        out.unit_ = std::ldexp(static_cast<double>(q), -bits) / scale;
        out.norm_bound_ = norm_bound;
        out.q_ = q;
        out.ratio_ = std::ldexp(1.0, bits) / static_cast<double>(q); // 2^bits / q
        out.c0_.resize(rows * cols);
        out.c1_.resize(rows * n);
        return out;
    }

    void CompactBatch::switch_row(std::size_t m, const std::uint64_t *c0_values, const std::uint64_t *c1_coefficients) noexcept
    {
        const std::size_t n = c1_.size() / rows_;
        for (std::size_t c = 0; c < cols_; c++)
        {
            c0_[m * cols_ + c] = switch_modulus(c0_values[c], q_, ratio_, bits_);
        }
        for (std::size_t i = 0; i < n; i++)
        {
            c1_[m * n + i] = switch_modulus(c1_coefficients[i], q_, ratio_, bits_);
        }
    }

    std::string CompactBatch::to_bytes() const
    {
        const std::size_t n = context_->params().poly_modulus_degree;
        ByteWriter w;
        w.u64(rows_);
        w.u64(cols_);
        w.u64(period_);
        w.u32(static_cast<std::uint32_t>(bits_));
        w.f64(unit_);
        w.f64(norm_bound_);
        std::string packed(packed_size(c0_.size(), bits_) + packed_size(rows_ * n, bits_), '\0');
        auto *p = reinterpret_cast<std::uint8_t *>(packed.data());
        pack_bits(c0_.data(), c0_.size(), bits_, p);
        pack_bits(c1_.data(), c1_.size(), bits_, p + packed_size(c0_.size(), bits_));
        w.raw(packed.data(), packed.size());
        WireHeader header{ ObjectKind::compact_batch, context_->params_fingerprint(), context_->keyset_id() };
        return wrap_payload(header, w.str());
    }

    CompactBatch CompactBatch::from_bytes(std::string_view bytes, std::shared_ptr<const PublicContext> context)
    {
        WireHeader header;
        const std::string_view payload = unwrap_payload(bytes, ObjectKind::compact_batch, header);
        if (header.params_fingerprint != context->params_fingerprint() || header.keyset_id != context->keyset_id())
        {
            throw ContextMismatchError("this CompactBatch was made under another key set than the given context");
        }
        const auto &cd = one_prime_level(*context);
        const std::size_t n = cd.parms().poly_modulus_degree();
        const double q_bits = std::log2(static_cast<double>(cd.parms().coeff_modulus().front().value()));
        ByteReader r(payload);
        if (payload.size() < compact_metadata_size)
        {
            throw SerializationError("malformed CompactBatch: truncated metadata");
        }
        CompactBatch out;
        out.context_ = std::move(context);
        const std::uint64_t rows = r.u64();
        const std::uint64_t cols = r.u64();
        const std::uint64_t period = r.u64();
        const std::uint32_t bits = r.u32();
        out.unit_ = r.f64();
        out.norm_bound_ = r.f64();
        const bool shape_ok = rows >= 1 && rows <= max_compact_rows && cols >= 1 && period >= 1 && period <= n &&
                              cols <= n / period;
        const bool bits_ok = bits >= static_cast<std::uint32_t>(min_bits) && bits <= static_cast<std::uint32_t>(q_bits);
        if (!shape_ok || !bits_ok || !std::isfinite(out.unit_) || !(out.unit_ > 0) || !std::isfinite(out.norm_bound_) ||
            !(out.norm_bound_ >= 0))
        {
            throw SerializationError("malformed CompactBatch: impossible shape, modulus or scale for this context");
        }
        out.rows_ = rows;
        out.cols_ = cols;
        out.period_ = period;
        out.bits_ = static_cast<int>(bits);
        const std::size_t c0_bytes = packed_size(rows * cols, out.bits_);
        const std::size_t c1_bytes = packed_size(rows * n, out.bits_);
        if (r.remaining() != c0_bytes + c1_bytes)
        {
            throw SerializationError("malformed CompactBatch: payload size does not match its shape");
        }
        const auto *p = reinterpret_cast<const std::uint8_t *>(r.raw(c0_bytes + c1_bytes).data());
        out.c0_.resize(rows * cols);
        out.c1_.resize(rows * n);
        const std::uint64_t bound = std::uint64_t(1) << out.bits_;
        if (!unpack_bits(p, out.c0_.size(), out.bits_, bound, out.c0_.data()) ||
            !unpack_bits(p + c0_bytes, out.c1_.size(), out.bits_, bound, out.c1_.data()))
        {
            throw SerializationError("malformed CompactBatch: a value is out of range");
        }
        return out;
    }
} // namespace hevit
