// Copyright (c) hevit developers. MIT license.
// LinearPlan, sample layout: the hybrid diagonal method (baby-step rotations of the input,
// giant-step rotations and folds of the product).
#include "hevit/linear_plan.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/parallel.h"
#include "sample_shape.h"
#include <algorithm>
#include <cmath>
#include <complex>
#include <sstream>

namespace hevit
{
    namespace detail
    {
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
            const std::size_t folds = ceil_log2(shape.period / shape.padded_out);
            const std::size_t budget = ceil_log2(in_dim) + out_dim - 1;
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
    } // namespace detail

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
        const detail::SampleShape shape = detail::sample_shape(slots, in_dim_, out_dim_, input_.fewest_key_switches);
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
            const double after = std::log2(scale) + bound_log + detail::headroom_bits;
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
            if (std::log2(output_scale_) + bound_log + detail::headroom_bits > detail::log2_modulus(*next))
            {
                std::ostringstream out;
                out << "this layer does not fit the modulus: outputs can reach " << max_abs_output_
                    << " (||w_k|| * input_norm_bound + |b_k|) but after rescaling only "
                    << std::floor(detail::log2_modulus(*next) - std::log2(output_scale_) - detail::headroom_bits)
                    << " bits of headroom remain; use the 'precise' preset, or a smaller max_norm / input_norm_bound";
                throw ParameterError(out.str());
            }
        }
        else
        {
            const double e = std::floor(std::min(detail::prime_bits_max, detail::log2_modulus(*cd) - detail::headroom_bits - std::log2(scale) - bound_log));
            if (e < detail::min_weight_scale_bits)
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
