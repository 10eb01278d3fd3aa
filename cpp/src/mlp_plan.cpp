// Copyright (c) hevit developers. MIT license.
#include "hevit/mlp_plan.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/parallel.h"
#include "seal/util/ntt.h"
#include <algorithm>
#include <cmath>
#include <complex>
#include <sstream>

namespace hevit
{
    namespace
    {
        /** Fewest data primes: layer 1 rescales, the square rescales, layer 2 needs one left. */
        constexpr std::size_t min_data_primes = 3;

        double last_prime(const seal::SEALContext::ContextData &cd)
        {
            return static_cast<double>(cd.parms().coeff_modulus().back().value());
        }
    } // namespace

    namespace
    {
        /** k = 2^(-1/4): k^2 sqrt(2) = 1 (see the class comment). */
        const double imaginary_weight = std::pow(2.0, -0.25);
    } // namespace

    EvaluationKeySpec MlpPlan::evaluation_keys(
        const CkksParams &params, std::size_t in_dim, std::size_t hidden, std::size_t out_dim, Layout layout)
    {
        validate_params(params);
        if (in_dim == 0 || hidden == 0 || out_dim == 0)
        {
            throw LayoutError("in_dim, hidden and out_dim must be positive");
        }
        EvaluationKeySpec keys;
        keys.conjugation = true;
        keys.relinearization = true;
        if (layout == Layout::sample)
        {
            const std::size_t stacked = 2 * hidden;
            keys.rotation_steps = LinearPlan::rotation_steps(params, in_dim, stacked, Layout::sample, true);
            const auto second = LinearPlan::rotation_steps(params, next_pow2(stacked), out_dim, Layout::sample, true);
            keys.rotation_steps.insert(keys.rotation_steps.end(), second.begin(), second.end());
            keys.rotation_steps.push_back(static_cast<int>(hidden)); // lines the k-block up with the first
            std::sort(keys.rotation_steps.begin(), keys.rotation_steps.end());
            keys.rotation_steps.erase(
                std::unique(keys.rotation_steps.begin(), keys.rotation_steps.end()), keys.rotation_steps.end());
        }
        return keys;
    }

    MlpPlan::MlpPlan(
        std::shared_ptr<const PublicContext> context, const double *w1, std::size_t hidden, std::size_t in_dim,
        const double *b1, const double *w2, std::size_t out_dim, const double *b2, Layout layout,
        double input_norm_bound)
        : context_(std::move(context)), layout_(layout)
    {
        if (hidden == 0 || in_dim == 0 || out_dim == 0)
        {
            throw LayoutError("the two-layer head needs non-empty (hidden, in_dim) and (out_dim, hidden) weights");
        }
        if (layout == Layout::coefficient)
        {
            throw LayoutError(
                "the two-layer head squares slot values: use the batch or sample layout (the coefficient layout "
                "serves linear heads)");
        }
        if (!context_->relin_keys())
        {
            throw MissingKeyError(
                "the two-layer head squares ciphertexts and needs relinearisation keys: generate the key set with "
                "MlpPlan.evaluation_keys(...)");
        }
        if (!context_->has_conjugation())
        {
            throw MissingKeyError(
                "the two-layer head separates the real and imaginary halves with a conjugation key: generate the key "
                "set with MlpPlan.evaluation_keys(...)");
        }
        const auto &seal_context = context_->seal_context();
        const auto fresh = seal_context.get_context_data(context_->data_parms_id());
        if (fresh->parms().coeff_modulus().size() < min_data_primes)
        {
            throw ParameterError(
                "the two-layer head needs at least three data primes (two rescales and the output level): use the "
                "'mlp' preset");
        }
        const double bound = detail::resolve_norm_bound(input_norm_bound, context_->params().max_norm);
        double sum_fourth = 0.0;
        for (std::size_t u = 0; u < hidden; u++)
        {
            double row_sq = 0.0;
            for (std::size_t j = 0; j < in_dim; j++)
            {
                row_sq += w1[u * in_dim + j] * w1[u * in_dim + j];
            }
            const double hb = std::sqrt(row_sq) * bound + (b1 ? std::fabs(b1[u]) : 0.0);
            hidden_bound_ = std::max(hidden_bound_, hb);
            sum_fourth += hb * hb * hb * hb;
        }

        hidden_ = hidden;
        if (layout == Layout::sample && !context_->has_rotation_step(static_cast<int>(hidden)))
        {
            throw MissingKeyError(
                "rotation step " + std::to_string(hidden) + " has no Galois key in this context; generate keys with "
                "MlpPlan.evaluation_keys(...)");
        }

        // Layer 1 on the stacked weights [W1; k W1], [b1; k b1]. Batch layout: integer weights
        // at about the size of the prime the rescale removes, so the hidden scale returns to
        // about the input scale; the conjugations run before that rescale. Sample layout:
        // LinearPlan rescales itself.
        std::vector<double> stacked_w(2 * hidden * in_dim);
        std::vector<double> stacked_b(2 * hidden, 0.0);
        for (std::size_t i = 0; i < hidden * in_dim; i++)
        {
            stacked_w[i] = w1[i];
            stacked_w[hidden * in_dim + i] = imaginary_weight * w1[i];
        }
        for (std::size_t u = 0; u < hidden && b1; u++)
        {
            stacked_b[u] = b1[u];
            stacked_b[hidden + u] = imaginary_weight * b1[u];
        }
        PlanInput first_input;
        first_input.parms_id = context_->data_parms_id();
        first_input.scale = context_->scale();
        first_input.fewest_key_switches = true;
        rescale_hidden_ = layout == Layout::batch;
        if (rescale_hidden_)
        {
            first_input.max_weight_scale_bits = static_cast<int>(std::floor(std::log2(last_prime(*fresh))));
        }
        first_ = std::make_unique<LinearPlan>(
            context_, stacked_w.data(), 2 * hidden, in_dim, stacked_b.data(), layout, bound, first_input);
        if (!std::isfinite(hidden_bound_))
        {
            throw ValueRangeError("the first layer's weights or bias are not finite");
        }
        seal::parms_id_type hidden_parms = first_->output_parms_id();
        double hidden_scale = first_->output_scale();
        if (rescale_hidden_)
        {
            const auto cd = seal_context.get_context_data(hidden_parms);
            hidden_scale /= last_prime(*cd);
            hidden_parms = cd->next_context_data()->parms_id();
        }
        const auto square_cd = seal_context.get_context_data(hidden_parms);
        if (!square_cd || !square_cd->next_context_data())
        {
            throw ParameterError("no level is left for the square stage: use the 'mlp' preset");
        }
        // T = 4 (a^2 + i b^2): each part up to 4 hb^2 (u^2 and p v^2 each up to that before the sum)
        const double square_scale = hidden_scale * hidden_scale;
        const double square_bits =
            std::log2(square_scale) + std::log2(std::max(8.0 * hidden_bound_ * hidden_bound_, 1.0));
        if (square_bits + detail::headroom_bits > detail::log2_modulus(*square_cd))
        {
            std::ostringstream out;
            out << "the squares of the hidden units do not fit the modulus: |W1 x + b1| can reach " << hidden_bound_
                << " (||w1_u|| * input_norm_bound + |b1_u|); train with a bound on the hidden pre-activations or use "
                   "a preset with more modulus";
            throw ParameterError(out.str());
        }
        {
            const std::size_t n = square_cd->parms().poly_modulus_degree();
            const auto &primes = square_cd->parms().coeff_modulus();
            i_sqrt2_.parms_id() = seal::parms_id_zero;
            i_sqrt2_.resize(n * primes.size());
            std::fill(i_sqrt2_.data(), i_sqrt2_.data() + n * primes.size(), 0);
            for (std::size_t l = 0; l < primes.size(); l++)
            {
                i_sqrt2_.data()[l * n + n / 4] = 1;
                i_sqrt2_.data()[l * n + 3 * n / 4] = 1;
                detail::forward_ntt(i_sqrt2_.data() + l * n, square_cd->small_ntt_tables()[l]);
            }
            i_sqrt2_.parms_id() = hidden_parms;
            i_sqrt2_.scale() = 1.0;
        }

        // Layer 2 on T = 4 (a^2 + i b^2): W2 / 4, inputs bounded by 4 sqrt(sum_u hb_u^4). In the
        // sample layout T's rows have the period of the stacked layer and hold garbage past
        // slot `hidden`, so W2 is zero-padded to that period.
        const auto t_cd = square_cd->next_context_data();
        PlanInput second_input;
        second_input.parms_id = t_cd->parms_id();
        second_input.scale = square_scale / last_prime(*square_cd);
        second_input.allow_unrescaled = true;
        second_input.fewest_key_switches = true;
        const std::size_t second_in = layout == Layout::sample ? first_->output_period() : hidden;
        std::vector<double> w2_quarter(out_dim * second_in, 0.0);
        std::vector<double> bias2(out_dim, 0.0);
        for (std::size_t k = 0; k < out_dim; k++)
        {
            bias2[k] = b2 ? b2[k] : 0.0;
            for (std::size_t u = 0; u < hidden; u++)
            {
                w2_quarter[k * second_in + u] = 0.25 * w2[k * hidden + u];
            }
        }
        // Batch layout: a hidden unit whose weights all quantise to zero comes out of the
        // multiply-accumulate as its bias alone with c1 = 0 (a transparent ciphertext that SEAL
        // refuses to multiply). Its square is public: fold w2_ku b1_u^2 into the output bias.
        squared_unit_.assign(hidden, true);
        if (layout == Layout::batch)
        {
            const double weight_scale = std::ldexp(1.0, static_cast<int>(first_->weight_scale_bits()));
            for (std::size_t u = 0; u < hidden; u++)
            {
                bool zero = true;
                for (std::size_t j = 0; j < in_dim && zero; j++)
                {
                    zero = std::fabs(w1[u * in_dim + j]) * weight_scale < 0.5;
                }
                if (!zero)
                {
                    continue;
                }
                squared_unit_[u] = false;
                const double square = b1 ? b1[u] * b1[u] : 0.0;
                for (std::size_t k = 0; k < out_dim; k++)
                {
                    bias2[k] += w2[k * hidden + u] * square;
                    w2_quarter[k * second_in + u] = 0.0;
                }
            }
        }
        second_ = std::make_unique<LinearPlan>(
            context_, w2_quarter.data(), out_dim, second_in, bias2.data(), layout, 4.0 * std::sqrt(sum_fourth),
            second_input);
    }

    std::vector<int> MlpPlan::rotation_steps() const
    {
        std::vector<int> steps = first_->steps();
        steps.insert(steps.end(), second_->steps().begin(), second_->steps().end());
        if (layout_ == Layout::sample)
        {
            steps.push_back(static_cast<int>(hidden_));
        }
        std::sort(steps.begin(), steps.end());
        steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
        return steps;
    }

    std::size_t MlpPlan::key_switches() const noexcept
    {
        // batch: two conjugations and one relinearisation per hidden unit; sample: one
        // conjugation, one rotation, one relinearisation
        return layout_ == Layout::batch ? 3 * hidden_ : first_->key_switches() + 3 + second_->key_switches();
    }

    seal::Ciphertext MlpPlan::square_stage(
        seal::Ciphertext h, seal::Ciphertext h_scaled, const seal::Evaluator &evaluator) const
    {
        const seal::GaloisKeys &galois = *context_->galois_keys();
        seal::Ciphertext conj;
        evaluator.complex_conjugate(h, galois, conj);
        evaluator.add_inplace(h, conj); // u = 2a
        if (layout_ == Layout::batch)
        {
            evaluator.complex_conjugate(h_scaled, galois, conj);
            evaluator.sub_inplace(h_scaled, conj); // v = 2ik b
        }
        else
        {
            // h and h' are one ciphertext (slots [0, hidden) and [hidden, 2 hidden) of each
            // period): v = h - conj(h) there, then rotated so v's k-block lines up with u's
            evaluator.sub_inplace(h_scaled, conj);
            evaluator.rotate_vector_inplace(h_scaled, static_cast<int>(hidden_), galois);
        }
        if (rescale_hidden_)
        {
            evaluator.rescale_to_next_inplace(h);
            evaluator.rescale_to_next_inplace(h_scaled);
        }
        evaluator.square_inplace(h);                        // 4 a^2
        evaluator.square_inplace(h_scaled);                 // -4 k^2 b^2
        evaluator.multiply_plain_inplace(h_scaled, i_sqrt2_); // -4 i b^2
        evaluator.sub_inplace(h, h_scaled);                 // 4 (a^2 + i b^2)
        evaluator.relinearize_inplace(h, *context_->relin_keys());
        evaluator.rescale_to_next_inplace(h);
        return h;
    }

    EncryptedBatch MlpPlan::apply(const EncryptedBatch &batch, int threads) const
    {
        first_->check_input(batch);
        const std::vector<seal::Ciphertext> stacked = first_->evaluate(batch.ciphertexts(), batch.rows(), threads);
        const seal::Evaluator evaluator(context_->seal_context());
        std::vector<seal::Ciphertext> squares;
        if (layout_ == Layout::batch)
        {
            // stacked[g * 2H + u] is h_u of group g, stacked[g * 2H + H + u] is k h_u
            const std::size_t groups = stacked.size() / (2 * hidden_);
            squares.resize(groups * hidden_);
            parallel_for(squares.size(), threads, [&](std::size_t i) {
                const std::size_t g = i / hidden_;
                const std::size_t u = i % hidden_;
                if (!squared_unit_[u])
                {
                    return; // folded into layer 2's bias at compile time; never read
                }
                squares[i] = square_stage(stacked[g * 2 * hidden_ + u], stacked[g * 2 * hidden_ + hidden_ + u], evaluator);
            });
        }
        else
        {
            squares.resize(stacked.size());
            parallel_for(squares.size(), threads, [&](std::size_t i) {
                squares[i] = square_stage(stacked[i], stacked[i], evaluator);
            });
        }
        std::vector<seal::Ciphertext> out = second_->evaluate(squares, batch.rows(), threads);
        return EncryptedBatch(
            context_, layout_, batch.rows(), out_dim(), second_->output_period(), output_norm_bound(), std::move(out));
    }
} // namespace hevit
