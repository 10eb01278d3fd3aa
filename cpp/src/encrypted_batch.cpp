// Copyright (c) hevit developers. MIT license.
// EncryptedBatch: construction, public-key encryption and sums; the wire codec lives in
// batch_codec.cpp, the seed expansion in prng.cpp.
#include "hevit/encrypted_batch.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/parallel.h"
#include "hevit/prng.h"
#include "seal/util/polyarithsmallmod.h"
#include "seal/util/rlwe.h"
#include <algorithm>
#include <cmath>
#include <sstream>

namespace hevit
{
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
} // namespace hevit
