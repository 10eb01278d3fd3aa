// Copyright (c) hevit developers. MIT license.
#include "hevit/encrypted_batch.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/parallel.h"
#include "hevit/prng.h"
#include "seal/util/polyarithsmallmod.h"
#include "seal/util/rlwe.h"
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <sstream>

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

    namespace detail
    {
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

    EncryptedBatch::EncryptedBatch(
        std::shared_ptr<const PublicContext> context, Layout layout, std::size_t rows, std::size_t cols,
        std::size_t period, double norm_bound, std::vector<seal::Ciphertext> ciphertexts,
        std::vector<seal::prng_seed_type> seeds)
        : context_(std::move(context)), layout_(layout), rows_(rows), cols_(cols), period_(period),
          norm_bound_(norm_bound), ciphertexts_(std::move(ciphertexts)), seeds_(std::move(seeds))
    {
        if (ciphertexts_.size() != ciphertext_count(layout_, rows_, cols_, context_->params().poly_modulus_degree))
        {
            throw std::logic_error("EncryptedBatch: ciphertext count does not match shape and layout");
        }
        if (seeds_.size() % ciphertexts_.size() != 0 || seed_count() > max_seeds_per_ciphertext)
        {
            throw std::logic_error("EncryptedBatch: seed count does not match ciphertext count");
        }
    }

    EncryptedBatch EncryptedBatch::encrypt_public(
        std::shared_ptr<const PublicContext> context, const double *values, std::size_t rows, std::size_t cols,
        Layout layout, int threads)
    {
        const std::size_t period = detail::check_plain_input(*context, values, rows, cols, layout);
        const std::size_t count = ciphertext_count(layout, rows, cols, context->params().poly_modulus_degree);
        std::vector<seal::Ciphertext> cts(count);
        const seal::Encryptor encryptor(context->seal_context(), context->public_key());
        parallel_for(count, threads, [&](std::size_t i) {
            seal::Plaintext pt;
            detail::encode_plain(*context, values, rows, cols, layout, period, i, pt);
            encryptor.encrypt(pt, cts[i]);
        });
        const double bound = context->params().max_norm;
        return EncryptedBatch(std::move(context), layout, rows, cols, period, bound, std::move(cts));
    }

    EncryptedBatch EncryptedBatch::sum(const std::vector<const EncryptedBatch *> &batches, int threads)
    {
        if (batches.empty())
        {
            throw LayoutError("sum needs at least one EncryptedBatch");
        }
        const EncryptedBatch &first = *batches.front();
        double bound = 0.0;
        for (std::size_t b = 0; b < batches.size(); b++)
        {
            const EncryptedBatch &other = *batches[b];
            for (const auto &ct : other.ciphertexts_)
            {
                if (detail::is_transparent(ct))
                {
                    throw SerializationError("a transparent ciphertext (c1 = 0) is not an encryption: refused");
                }
            }
            if (!other.context_->same_keys_as(*first.context_))
            {
                throw ContextMismatchError(
                    "batch " + std::to_string(b) + " was encrypted under another key set or other parameters; "
                    "all clients must use the same public context");
            }
            if (other.layout_ != first.layout_ || other.rows_ != first.rows_ || other.cols_ != first.cols_ ||
                other.period_ != first.period_)
            {
                std::ostringstream out;
                out << "batch " << b << " has layout '" << layout_name(other.layout_) << "' and shape (" << other.rows_
                    << ", " << other.cols_ << "), batch 0 has layout '" << layout_name(first.layout_) << "' and shape ("
                    << first.rows_ << ", " << first.cols_ << "); sum adds batches of one layout and shape";
                throw LayoutError(out.str());
            }
            if (other.prime_count() != first.prime_count() || other.scale() != first.scale())
            {
                throw LayoutError("batch " + std::to_string(b) + " is at another level or scale than batch 0");
            }
            bound += other.norm_bound_;
        }
        std::vector<seal::Ciphertext> cts(first.ciphertexts_.size());
        const seal::Evaluator evaluator(first.context_->seal_context());
        parallel_for(cts.size(), threads, [&](std::size_t i) {
            cts[i] = first.ciphertexts_[i];
            for (std::size_t b = 1; b < batches.size(); b++)
            {
                evaluator.add_inplace(cts[i], batches[b]->ciphertexts_[i]);
            }
        });
        // c1 of the sum is the sum of the seed expansions: keep the seeds (c0 plus k seeds on the
        // wire instead of c0 and c1) while they fit the per-ciphertext limit
        std::size_t total_seeds = 0;
        bool all_seeded = true;
        for (const auto *b : batches)
        {
            all_seeded = all_seeded && b->seeded();
            total_seeds += b->seed_count();
        }
        std::vector<seal::prng_seed_type> seeds;
        if (all_seeded && total_seeds <= max_seeds_per_ciphertext)
        {
            seeds.reserve(cts.size() * total_seeds);
            for (std::size_t i = 0; i < cts.size(); i++)
            {
                for (const auto *b : batches)
                {
                    const std::size_t k = b->seed_count();
                    seeds.insert(seeds.end(), b->seeds_.begin() + i * k, b->seeds_.begin() + (i + 1) * k);
                }
            }
        }
        return EncryptedBatch(
            first.context_, first.layout_, first.rows_, first.cols_, first.period_, bound, std::move(cts),
            std::move(seeds));
    }

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
