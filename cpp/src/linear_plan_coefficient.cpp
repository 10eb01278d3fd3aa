// Copyright (c) hevit developers. MIT license.
// The coefficient-layout kernel of LinearPlan: compile and apply.
#include "hevit/errors.h"
#include "hevit/linear_plan.h"
#include "hevit/modular.h"
#include "hevit/parallel.h"
#include "seal/util/ntt.h"
#include "seal/util/polyarithsmallmod.h"
#include <algorithm>
#include <cmath>
#include <sstream>

namespace hevit
{
    namespace
    {
        /** Headroom (bits) between the largest output times its scale and the prime: a
        coefficient decodes correctly while |value| < q / 2; keep it below q / 4. */
        constexpr double coefficient_headroom_bits = 2.0;
        /** Fewest weight-scale bits a layer may get before it is refused. */
        constexpr double min_weight_scale_bits = 8.0;
    } // namespace

    void LinearPlan::compile_coefficient(const double *weights, const double *bias)
    {
        const auto cd = context_->seal_context().get_context_data(input_.parms_id);
        const auto &primes = cd->parms().coeff_modulus();
        if (primes.size() != 1)
        {
            throw LayoutError(
                "the coefficient layout needs one data prime: use the 'throughput' or 'latency' preset");
        }
        const std::size_t n = cd->parms().poly_modulus_degree();
        if (out_dim_ > n / in_dim_)
        {
            std::ostringstream out;
            out << "a " << out_dim_ << " x " << in_dim_ << " layer needs out_dim * in_dim = " << out_dim_ * in_dim_
                << " <= N = " << n << " coefficients in the coefficient layout; use a larger poly_modulus_degree, "
                << "or the batch or sample layout";
            throw LayoutError(out.str());
        }
        const seal::Modulus &q = primes.front();
        const double q_bits = std::log2(static_cast<double>(q.value()));
        double max_w = 0.0;
        for (std::size_t i = 0; i < out_dim_ * in_dim_; i++)
        {
            max_w = std::max(max_w, std::fabs(weights[i]));
        }
        const double capacity = q_bits - coefficient_headroom_bits - std::log2(input_.scale) -
                                std::log2(std::max(max_abs_output_, 1.0));
        const double weight_cap = max_w > 0 ? q_bits - coefficient_headroom_bits - std::log2(max_w) : capacity;
        const double e = std::floor(std::min({ capacity, weight_cap, 62.0 }));
        if (e < min_weight_scale_bits)
        {
            std::ostringstream out;
            out << "this layer does not fit the modulus: outputs can reach " << max_abs_output_
                << " (||w_k|| * input_norm_bound + |b_k|), which leaves " << e
                << " bits for the weight scale (need >= 8); use a smaller max_norm / input_norm_bound";
            throw ParameterError(out.str());
        }
        weight_scale_bits_ = e;
        const double weight_scale = std::ldexp(1.0, static_cast<int>(e));
        output_scale_ = input_.scale * weight_scale;
        output_parms_id_ = input_.parms_id;

        weight_poly_ntt_.assign(n, 0);
        bias_poly_ntt_.assign(n, 0);
        for (std::size_t k = 0; k < out_dim_; k++)
        {
            for (std::size_t i = 0; i < in_dim_; i++)
            {
                // row k reversed: coefficient k D + i holds w_{k, D-1-i}
                weight_poly_ntt_[k * in_dim_ + i] = detail::to_residue(weights[k * in_dim_ + (in_dim_ - 1 - i)] * weight_scale, q);
            }
            if (bias)
            {
                bias_poly_ntt_[k * in_dim_ + in_dim_ - 1] = detail::to_residue(bias[k] * output_scale_, q);
            }
        }
        detail::forward_ntt(weight_poly_ntt_.data(), cd->small_ntt_tables()[0]);
        detail::forward_ntt(bias_poly_ntt_.data(), cd->small_ntt_tables()[0]);
    }

    std::vector<seal::Ciphertext> LinearPlan::apply_coefficient(const std::vector<seal::Ciphertext> &in, int threads) const
    {
        const auto &seal_context = context_->seal_context();
        const auto cd = seal_context.get_context_data(input_.parms_id);
        const seal::Modulus &q = cd->parms().coeff_modulus().front();
        const std::size_t n = cd->parms().poly_modulus_degree();
        std::vector<seal::Ciphertext> out(in.size());
        parallel_for(in.size(), threads, [&](std::size_t m) {
            seal::Ciphertext &ct = out[m];
            ct.resize(seal_context, input_.parms_id, 2);
            ct.is_ntt_form() = true;
            ct.scale() = output_scale_;
            for (std::size_t poly = 0; poly < 2; poly++)
            {
                seal::util::dyadic_product_coeffmod(in[m].data(poly), weight_poly_ntt_.data(), n, q, ct.data(poly));
            }
            seal::util::add_poly_coeffmod(ct.data(0), bias_poly_ntt_.data(), n, q, ct.data(0));
        });
        return out;
    }
} // namespace hevit
