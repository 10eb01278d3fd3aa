// Copyright (c) hevit developers. MIT license.
#include "hevit/linear_plan.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/parallel.h"
#include "seal/util/ntt.h"
#include "seal/util/uintarithsmallmod.h"
#include <algorithm>
#include <cmath>
#include <sstream>

namespace hevit
{
    namespace
    {
        constexpr std::size_t coefficient_block = 128;

        std::size_t log2_exact(std::size_t v) noexcept
        {
            std::size_t l = 0;
            while ((std::size_t(1) << l) < v)
            {
                l++;
            }
            return l;
        }

        struct SampleShape
        {
            std::size_t padded_out;
            std::size_t period;
            std::size_t baby;
            std::size_t giant;
        };

        SampleShape sample_shape(std::size_t slots, std::size_t in_dim, std::size_t out_dim, bool fewest_key_switches)
        {
            SampleShape shape{};
            shape.padded_out = next_pow2(out_dim);
            const std::size_t padded_in = next_pow2(in_dim);
            shape.period = std::max(padded_in, shape.padded_out);
            // next_pow2 is 0 for widths beyond the largest power of two: those never fit either
            const bool beyond = shape.padded_out == 0 || padded_in == 0;
            if (beyond || shape.period > slots)
            {
                std::ostringstream out;
                out << "a " << out_dim << " x " << in_dim << " layer needs ";
                if (beyond)
                {
                    out << "more than 2^63";
                }
                else
                {
                    out << shape.period;
                }
                out << " slots in the sample layout but these parameters have " << slots
                    << "; use the batch layout or a larger poly_modulus_degree";
                throw LayoutError(out.str());
            }
            // Baby-step rotations act on the input at its (small) scale, so their key-switching
            // noise reaches the output; giant steps and folds act on the product at scale
            // input_scale * weight_scale, where the same noise is negligible. So take as few baby
            // steps as possible while staying within ceil(log2 in_dim) + out_dim - 1 key switches
            // (the budget of the rectangular hybrid method), and the fewest key switches overall
            // when nothing fits that budget.
            const std::size_t folds = log2_exact(shape.period / shape.padded_out);
            const std::size_t budget = log2_exact(in_dim) + out_dim - 1;
            std::size_t best_total = ~std::size_t(0);
            for (std::size_t baby = 1; baby <= shape.padded_out; baby *= 2)
            {
                const std::size_t total = (baby - 1) + (shape.padded_out / baby - 1) + folds;
                if (total <= budget && !fewest_key_switches)
                {
                    shape.baby = baby;
                    break;
                }
                if (total < best_total)
                {
                    best_total = total;
                    shape.baby = baby;
                }
            }
            shape.giant = shape.padded_out / shape.baby;
            return shape;
        }

    } // namespace

    std::vector<int> LinearPlan::rotation_steps(
        const CkksParams &params, std::size_t in_dim, std::size_t out_dim, Layout layout, bool fewest_key_switches)
    {
        validate_params(params);
        if (in_dim == 0 || out_dim == 0)
        {
            throw LayoutError("in_dim and out_dim must be positive");
        }
        if (layout != Layout::sample)
        {
            return {}; // batch and coefficient layouts never rotate
        }
        const SampleShape shape = sample_shape(params.poly_modulus_degree / 2, in_dim, out_dim, fewest_key_switches);
        std::vector<int> steps;
        for (std::size_t b = 1; b < shape.baby; b++)
        {
            steps.push_back(static_cast<int>(b));
        }
        for (std::size_t g = 1; g < shape.giant; g++)
        {
            steps.push_back(static_cast<int>(g * shape.baby));
        }
        for (std::size_t s = shape.period / 2; s >= shape.padded_out && s > 0; s /= 2)
        {
            steps.push_back(static_cast<int>(s));
        }
        std::sort(steps.begin(), steps.end());
        steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
        return steps;
    }

    namespace
    {
        PlanInput fresh_input(const PublicContext &context)
        {
            PlanInput input;
            input.parms_id = context.data_parms_id();
            input.scale = context.scale();
            return input;
        }
    } // namespace

    LinearPlan::LinearPlan(
        std::shared_ptr<const PublicContext> context, const double *weights, std::size_t out_dim, std::size_t in_dim,
        const double *bias, Layout layout, double input_norm_bound)
        : LinearPlan(context, weights, out_dim, in_dim, bias, layout, input_norm_bound, fresh_input(*context))
    {}

    LinearPlan::LinearPlan(
        std::shared_ptr<const PublicContext> context, const double *weights, std::size_t out_dim, std::size_t in_dim,
        const double *bias, Layout layout, double input_norm_bound, const PlanInput &input)
        : context_(std::move(context)), input_(input), layout_(layout), in_dim_(in_dim), out_dim_(out_dim),
          input_norm_bound_(input_norm_bound > 0 ? input_norm_bound : context_->params().max_norm)
    {
        if (!context_->seal_context().get_context_data(input_.parms_id) || !(input_.scale > 0))
        {
            throw ParameterError("plan input level or scale does not belong to this context");
        }
        if (in_dim == 0 || out_dim == 0)
        {
            throw LayoutError("weights must be a non-empty (out_dim, in_dim) matrix");
        }
        if (!std::isfinite(input_norm_bound_))
        {
            throw ValueRangeError("input_norm_bound must be finite");
        }
        double sum_sq = 0.0;
        for (std::size_t k = 0; k < out_dim; k++)
        {
            double row_sq = 0.0;
            for (std::size_t j = 0; j < in_dim; j++)
            {
                const double w = weights[k * in_dim + j];
                if (!std::isfinite(w))
                {
                    throw ValueRangeError("weights contain a non-finite value at (" + std::to_string(k) + ", " + std::to_string(j) + ")");
                }
                row_sq += w * w;
            }
            const double b = bias ? bias[k] : 0.0;
            if (!std::isfinite(b))
            {
                throw ValueRangeError("bias contains a non-finite value at " + std::to_string(k));
            }
            const double bound = std::sqrt(row_sq) * input_norm_bound_ + std::fabs(b);
            max_abs_output_ = std::max(max_abs_output_, bound);
            sum_sq += bound * bound;
        }
        output_norm_bound_ = std::sqrt(sum_sq);
        switch (layout)
        {
        case Layout::batch:
            compile_batch(weights, bias);
            break;
        case Layout::sample:
            compile_sample(weights, bias);
            break;
        case Layout::coefficient:
            compile_coefficient(weights, bias);
            break;
        }
    }

    std::size_t LinearPlan::key_switches() const noexcept
    {
        if (layout_ != Layout::sample)
        {
            return 0;
        }
        return (baby_ - 1) + (giant_ - 1) + log2_exact(period_ / padded_out_);
    }

    void LinearPlan::compile_batch(const double *weights, const double *bias)
    {
        const auto cd = context_->seal_context().get_context_data(input_.parms_id);
        const auto &primes = cd->parms().coeff_modulus();
        const std::size_t n = cd->parms().poly_modulus_degree();
        const double scale_log = std::log2(input_.scale);
        const double bound_log = std::log2(std::max(max_abs_output_, 1.0));
        // Results (complex slots up to sqrt(2) * bound) must stay below a quarter of the modulus.
        const double capacity = detail::log2_modulus(*cd) - 2.5 - scale_log - bound_log;
        double max_w = 0.0;
        for (std::size_t i = 0; i < out_dim_ * in_dim_; i++)
        {
            max_w = std::max(max_w, std::fabs(weights[i]));
        }
        // 128-bit accumulation of in_dim products c * w with c < 2^60 must not overflow.
        const double int_bits = std::min(62.0, 125.0 - 60.0 - std::ceil(std::log2(std::max<double>(in_dim_, 2))));
        const double int_cap = max_w > 0 ? int_bits - std::log2(max_w) : capacity;
        double e = std::floor(std::min(capacity, int_cap));
        if (input_.max_weight_scale_bits > 0)
        {
            e = std::min(e, static_cast<double>(input_.max_weight_scale_bits));
        }
        if (e < 8)
        {
            std::ostringstream out;
            out << "this layer does not fit the modulus: outputs can reach " << max_abs_output_
                << " (||w_k|| * input_norm_bound + |b_k|) which leaves " << e
                << " bits for the weight scale (need >= 8); use the 'precise' preset, or a smaller max_norm / "
                   "input_norm_bound";
            throw ParameterError(out.str());
        }
        weight_scale_bits_ = e;
        const double weight_scale = std::ldexp(1.0, static_cast<int>(e));
        int_weights_.resize(out_dim_ * in_dim_);
        for (std::size_t i = 0; i < int_weights_.size(); i++)
        {
            int_weights_[i] = static_cast<std::int64_t>(std::llround(weights[i] * weight_scale));
        }
        for (std::size_t j = 0; j < in_dim_; j++)
        {
            for (std::size_t k = 0; k < out_dim_; k++)
            {
                if (int_weights_[k * in_dim_ + j] != 0)
                {
                    active_columns_.push_back(j);
                    break;
                }
            }
        }
        // Bias b_k in every slot, in the real and the imaginary part (both halves of the batch),
        // encoded once at the output scale; apply adds it to c0 limb by limb.
        bias_ntt_.assign(out_dim_, std::vector<std::uint64_t>(primes.size() * n, 0));
        const double out_scale = input_.scale * weight_scale;
        output_scale_ = out_scale;
        output_parms_id_ = input_.parms_id;
        for (std::size_t k = 0; k < out_dim_ && bias; k++)
        {
            if (bias[k] == 0.0)
            {
                continue;
            }
            const std::vector<std::complex<double>> slots(n / 2, { bias[k], bias[k] });
            seal::Plaintext plain;
            context_->encoder().encode(slots, cd->parms_id(), out_scale, plain);
            std::copy(plain.data(), plain.data() + primes.size() * n, bias_ntt_[k].begin());
        }
    }

    void LinearPlan::compile_sample(const double *weights, const double *bias)
    {
        const auto &params = context_->params();
        const std::size_t slots = context_->slot_count();
        steps_ = rotation_steps(params, in_dim_, out_dim_, Layout::sample, input_.fewest_key_switches);
        for (int step : steps_)
        {
            if (!context_->has_rotation_step(step))
            {
                std::ostringstream out;
                out << "rotation step " << step << " has no Galois key in this context; generate keys with "
                    << "rotation_steps=LinearPlan.rotation_steps(params, in_dim=" << in_dim_ << ", out_dim=" << out_dim_
                    << ", layout='sample')";
                throw MissingKeyError(out.str());
            }
        }
        const SampleShape shape = sample_shape(slots, in_dim_, out_dim_, input_.fewest_key_switches);
        period_ = shape.period;
        padded_out_ = shape.padded_out;
        baby_ = shape.baby;
        giant_ = shape.giant;

        const auto &seal_context = context_->seal_context();
        const auto cd = seal_context.get_context_data(input_.parms_id);
        const auto &primes = cd->parms().coeff_modulus();
        const double scale = input_.scale;
        const double bound_log = std::log2(std::max(max_abs_output_, 1.0));
        double weight_scale;
        rescale_ = primes.size() >= 2;
        if (rescale_ && input_.allow_unrescaled)
        {
            // a stage keeps its result unrescaled when rescaling would not leave the headroom
            const double after = std::log2(scale) + bound_log + 2.5;
            rescale_ = after <= detail::log2_modulus(*cd->next_context_data());
        }
        if (rescale_)
        {
            // Encode at exactly the prime that rescaling removes: the weights keep full precision
            // and the result returns to the input scale.
            weight_scale = static_cast<double>(primes.back().value());
            output_scale_ = (scale * weight_scale) / weight_scale; // the same expression SEAL evaluates
            const auto next = cd->next_context_data();
            output_parms_id_ = next->parms_id();
            weight_scale_bits_ = std::log2(weight_scale);
            if (std::log2(output_scale_) + bound_log + 2.5 > detail::log2_modulus(*next))
            {
                std::ostringstream out;
                out << "this layer does not fit the modulus: outputs can reach " << max_abs_output_
                    << " (||w_k|| * input_norm_bound + |b_k|) but after rescaling only "
                    << std::floor(detail::log2_modulus(*next) - std::log2(output_scale_) - 2.5)
                    << " bits of headroom remain; use the 'precise' preset, or a smaller max_norm / input_norm_bound";
                throw ParameterError(out.str());
            }
        }
        else
        {
            const double e = std::floor(std::min(60.0, detail::log2_modulus(*cd) - 2.5 - std::log2(scale) - bound_log));
            if (e < 8)
            {
                throw ParameterError(
                    "this layer does not fit the modulus without rescaling: use a preset with more data primes");
            }
            weight_scale = std::ldexp(1.0, static_cast<int>(e));
            weight_scale_bits_ = e;
            output_scale_ = scale * weight_scale;
            output_parms_id_ = cd->parms_id();
        }

        const auto padded_weight = [&](std::size_t row, std::size_t col) -> double {
            return row < out_dim_ && col < in_dim_ ? weights[row * in_dim_ + col] : 0.0;
        };
        const auto &encoder = context_->encoder();
        diagonals_.assign(giant_, std::vector<seal::Plaintext>(baby_));
        diagonal_nonzero_.assign(giant_ * baby_, false);
        std::vector<double> values(slots);
        for (std::size_t g = 0; g < giant_; g++)
        {
            for (std::size_t b = 0; b < baby_; b++)
            {
                const std::size_t i = g * baby_ + b;
                bool any = false;
                for (std::size_t s = 0; s < slots; s++)
                {
                    // pre-rotated by -g*baby so that the giant-step rotation lines it up again
                    const std::size_t j = (s + slots - (g * baby_) % slots) % slots;
                    values[s] = padded_weight(j % padded_out_, (j + i) % period_);
                    any |= values[s] != 0.0;
                }
                if (!any)
                {
                    continue;
                }
                encoder.encode(values, cd->parms_id(), weight_scale, diagonals_[g][b]);
                // A diagonal too small to survive encoding would make SEAL's product transparent.
                diagonal_nonzero_[i] = !diagonals_[g][b].is_zero();
            }
        }
        // The result is periodic in padded_out_ over all slots (every slot s holds y_{s mod C'}), so
        // the bias is too: the output can feed another sample-layout stage as it is.
        std::vector<std::complex<double>> bias_slots(slots, { 0.0, 0.0 });
        for (std::size_t s = 0; s < slots && bias; s++)
        {
            const std::size_t k = s % padded_out_;
            if (k < out_dim_)
            {
                bias_slots[s] = { bias[k], bias[k] };
            }
        }
        encoder.encode(bias_slots, output_parms_id_, output_scale_, bias_plain_);

        baby_used_.assign(baby_, false);
        giant_used_.assign(giant_, false);
        for (std::size_t i = 0; i < diagonal_nonzero_.size(); i++)
        {
            if (diagonal_nonzero_[i])
            {
                baby_used_[i % baby_] = true;
                giant_used_[i / baby_] = true;
            }
        }
    }

    EncryptedBatch LinearPlan::apply(const EncryptedBatch &batch, int threads) const
    {
        check_input(batch);
        auto out = evaluate(batch.ciphertexts(), batch.rows(), threads);
        std::size_t period = 0;
        if (layout_ != Layout::batch)
        {
            period = layout_ == Layout::sample ? period_ : in_dim_; // coefficient: output k at k D + D - 1
        }
        return EncryptedBatch(context_, layout_, batch.rows(), out_dim_, period, output_norm_bound_, std::move(out));
    }

    void LinearPlan::check_input(const EncryptedBatch &batch) const
    {
        if (!batch.context()->same_keys_as(*context_))
        {
            throw ContextMismatchError("this EncryptedBatch was made under another key set than the plan's context");
        }
        if (batch.layout() != layout_)
        {
            throw LayoutError(
                std::string("plan was compiled for the '") + layout_name(layout_) + "' layout but the batch is in the '" +
                layout_name(batch.layout()) + "' layout");
        }
        if (batch.cols() != in_dim_)
        {
            throw LayoutError(
                "plan expects rows of " + std::to_string(in_dim_) + " values, the batch has " + std::to_string(batch.cols()));
        }
        if (batch.ciphertexts().front().parms_id() != input_.parms_id || batch.scale() != input_.scale)
        {
            throw LayoutError("plan inputs must be fresh-level ciphertexts at the context scale (not plan outputs)");
        }
        if (layout_ == Layout::coefficient && batch.period() != 1)
        {
            throw LayoutError("coefficient-layout plans read fresh rows (period 1), not plan outputs");
        }
        if (layout_ == Layout::sample && (batch.period() > period_ || period_ % batch.period() != 0))
        {
            throw LayoutError(
                "batch slot period " + std::to_string(batch.period()) + " does not divide the plan's period " +
                std::to_string(period_));
        }
        if (batch.norm_bound() > input_norm_bound_ * (1.0 + 1e-9))
        {
            std::ostringstream out;
            out << "batch rows may have L2 norm up to " << batch.norm_bound() << " (for example a sum of batches) but "
                << "the plan was compiled for input_norm_bound=" << input_norm_bound_
                << "; compile the plan with input_norm_bound >= " << batch.norm_bound();
            throw ValueRangeError(out.str());
        }
    }

    std::vector<seal::Ciphertext> LinearPlan::evaluate(
        const std::vector<seal::Ciphertext> &in, std::size_t rows, int threads) const
    {
        switch (layout_)
        {
        case Layout::batch:
            return apply_batch(in, rows, threads);
        case Layout::coefficient:
            return apply_coefficient(in, threads);
        case Layout::sample:
            break;
        }
        return apply_sample(in, threads);
    }

    std::vector<seal::Ciphertext> LinearPlan::apply_batch(
        const std::vector<seal::Ciphertext> &in, std::size_t rows, int threads) const
    {
        const auto &seal_context = context_->seal_context();
        const auto cd = seal_context.get_context_data(input_.parms_id);
        const auto &primes = cd->parms().coeff_modulus();
        const std::size_t n = cd->parms().poly_modulus_degree();
        const std::size_t groups = batch_groups(rows, n);
        const std::size_t limbs = primes.size();
        const std::size_t blocks = n / coefficient_block;
        const double out_scale = output_scale_;

        std::vector<seal::Ciphertext> out(groups * out_dim_);
        for (auto &ct : out)
        {
            ct.resize(seal_context, cd->parms_id(), 2);
            ct.is_ntt_form() = true;
            ct.scale() = out_scale;
        }
        const std::size_t tasks = groups * limbs * 2 * blocks;
        parallel_for(tasks, threads, [&](std::size_t task) {
            const std::size_t block = task % blocks;
            const std::size_t poly = (task / blocks) % 2;
            const std::size_t l = (task / blocks / 2) % limbs;
            const std::size_t g = task / blocks / 2 / limbs;
            const std::size_t offset = l * n + block * coefficient_block;
            std::vector<__int128> acc(out_dim_ * coefficient_block, 0);
            for (std::size_t j : active_columns_)
            {
                const std::uint64_t *src = in[g * in_dim_ + j].data(poly) + offset;
                for (std::size_t k = 0; k < out_dim_; k++)
                {
                    const std::int64_t w = int_weights_[k * in_dim_ + j];
                    if (w == 0)
                    {
                        continue;
                    }
                    __int128 *a = acc.data() + k * coefficient_block;
                    for (std::size_t i = 0; i < coefficient_block; i++)
                    {
                        a[i] += static_cast<__int128>(w) * static_cast<std::int64_t>(src[i]);
                    }
                }
            }
            const seal::Modulus &q = primes[l];
            for (std::size_t k = 0; k < out_dim_; k++)
            {
                std::uint64_t *dst = out[g * out_dim_ + k].data(poly) + offset;
                const __int128 *a = acc.data() + k * coefficient_block;
                const std::uint64_t *bias = poly == 0 ? bias_ntt_[k].data() + offset : nullptr;
                for (std::size_t i = 0; i < coefficient_block; i++)
                {
                    const bool negative = a[i] < 0;
                    const unsigned __int128 mag = static_cast<unsigned __int128>(negative ? -a[i] : a[i]);
                    const std::uint64_t words[2] = { static_cast<std::uint64_t>(mag), static_cast<std::uint64_t>(mag >> 64) };
                    std::uint64_t r = seal::util::barrett_reduce_128(words, q);
                    if (negative)
                    {
                        r = seal::util::negate_uint_mod(r, q);
                    }
                    if (bias)
                    {
                        r = seal::util::add_uint_mod(r, bias[i], q);
                    }
                    dst[i] = r;
                }
            }
        });
        return out;
    }

    std::vector<seal::Ciphertext> LinearPlan::apply_sample(const std::vector<seal::Ciphertext> &in, int threads) const
    {
        const auto &seal_context = context_->seal_context();
        const seal::GaloisKeys *keys = context_->galois_keys();
        const seal::Evaluator evaluator(seal_context);
        const std::size_t count = in.size();
        std::vector<seal::Ciphertext> out(count);
        const auto &baby_used = baby_used_;
        const auto &giant_used = giant_used_;
        const bool any_term = std::find(giant_used.begin(), giant_used.end(), true) != giant_used.end();
        if (!any_term)
        {
            // W is zero: the result is the bias alone, encrypted fresh with the public key.
            const seal::Encryptor encryptor(seal_context, context_->public_key());
            parallel_for(count, threads, [&](std::size_t m) { encryptor.encrypt(bias_plain_, out[m]); });
            return out;
        }

        // Three parallel phases, so that even a single ciphertext uses every thread on its
        // independent rotations: (1) baby-step rotations of the input, (2) per giant step the
        // sum of diagonal products rotated into place, (3) per ciphertext the sum over giant
        // steps, the folds, the rescale and the bias.
        std::vector<seal::Ciphertext> rotated(count * baby_);
        parallel_for(count * baby_, threads, [&](std::size_t task) {
            const std::size_t m = task / baby_;
            const std::size_t b = task % baby_;
            if (b > 0 && baby_used[b])
            {
                evaluator.rotate_vector(in[m], static_cast<int>(b), *keys, rotated[task]);
            }
        });
        const auto input = [&](std::size_t m, std::size_t b) -> const seal::Ciphertext & {
            return b == 0 ? in[m] : rotated[m * baby_ + b];
        };

        std::vector<seal::Ciphertext> partial(count * giant_);
        parallel_for(count * giant_, threads, [&](std::size_t task) {
            const std::size_t m = task / giant_;
            const std::size_t g = task % giant_;
            if (!giant_used[g])
            {
                return;
            }
            seal::Ciphertext &acc = partial[task];
            seal::Ciphertext term;
            bool acc_set = false;
            for (std::size_t b = 0; b < baby_; b++)
            {
                if (!diagonal_nonzero_[g * baby_ + b])
                {
                    continue;
                }
                if (acc_set)
                {
                    evaluator.multiply_plain(input(m, b), diagonals_[g][b], term);
                    evaluator.add_inplace(acc, term);
                }
                else
                {
                    evaluator.multiply_plain(input(m, b), diagonals_[g][b], acc);
                    acc_set = true;
                }
            }
            if (g > 0)
            {
                evaluator.rotate_vector_inplace(acc, static_cast<int>(g * baby_), *keys);
            }
        });

        parallel_for(count, threads, [&](std::size_t m) {
            seal::Ciphertext z;
            bool z_set = false;
            for (std::size_t g = 0; g < giant_; g++)
            {
                if (!giant_used[g])
                {
                    continue;
                }
                if (z_set)
                {
                    evaluator.add_inplace(z, partial[m * giant_ + g]);
                }
                else
                {
                    z = std::move(partial[m * giant_ + g]);
                    z_set = true;
                }
            }
            // Key-switching noise is absolute (set by q / P, not by the scale), so every rotation
            // after the product happens before rescaling, while the values sit at scale
            // input_scale * weight_scale and the noise is negligible against them.
            seal::Ciphertext term;
            for (std::size_t s = period_ / 2; s >= padded_out_ && s > 0; s /= 2)
            {
                evaluator.rotate_vector(z, static_cast<int>(s), *keys, term);
                evaluator.add_inplace(z, term);
            }
            if (rescale_)
            {
                evaluator.rescale_to_next_inplace(z);
            }
            evaluator.add_plain_inplace(z, bias_plain_);
            out[m] = std::move(z);
        });
        return out;
    }
} // namespace hevit
