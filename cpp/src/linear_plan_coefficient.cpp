// Copyright (c) hevit developers. MIT license.
// The coefficient-layout kernel of LinearPlan: compile and apply.
#include "hevit/errors.h"
#include "hevit/linear_plan.h"
#include "hevit/modular.h"
#include "hevit/parallel.h"
#include "seal/util/globals.h"
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

    void LinearPlan::check_coefficient_precision(const double *weights, const double *bias, double weight_scale)
    {
        double frobenius_sq = 0.0;
        for (std::size_t i = 0; i < out_dim_ * in_dim_; i++)
        {
            frobenius_sq += weights[i] * weights[i];
        }
        const double frobenius = std::sqrt(frobenius_sq);
        // one fresh noise coefficient (SEAL's std) and the rounding of the value to an integer
        const double sigma = std::hypot(seal::util::global_variables::noise_standard_deviation, std::sqrt(1.0 / 12.0));
        const double noise = coefficient_error_sigmas * sigma * frobenius / input_.scale;
        output_error_bounds_.assign(out_dim_, 0.0);
        for (std::size_t k = 0; k < out_dim_; k++)
        {
            double row_sq = 0.0;
            std::size_t nonzero = 0;
            for (std::size_t i = 0; i < in_dim_; i++)
            {
                const double w = weights[k * in_dim_ + i];
                row_sq += w * w;
                nonzero += w != 0.0;
            }
            // weights rounded to 1/weight_scale meet at most sqrt(nnz) * bound of the input (L1
            // by Cauchy-Schwarz); the rounded bias and the output rounding stay below 2 units
            const double rounding = 0.5 / weight_scale * std::sqrt(static_cast<double>(nonzero)) * input_norm_bound_ +
                                    2.0 / output_scale_;
            const double error = noise + rounding;
            output_error_bounds_[k] = error;
            const double row_norm = std::sqrt(row_sq);
            // the data-dependent part of output k: |w_k . x| <= ||w_k|| * bound (the bias is a
            // public constant; a large one must not excuse burying the part that carries data)
            const double bound = row_norm * input_norm_bound_;
            const double allowed = input_.max_abs_error > 0
                                       ? input_.max_abs_error
                                       : std::ldexp(bound, -static_cast<int>(coefficient_min_output_precision_bits));
            // a zero row's output is its bias whatever the input: no data precision to lose
            const bool exempt = input_.max_abs_error <= 0 && row_sq == 0.0;
            if (!exempt && error > allowed)
            {
                std::ostringstream out;
                out << "coefficient layout: output " << k << " would carry errors up to " << error << " but ";
                if (input_.max_abs_error > 0)
                {
                    out << "max_abs_error is " << input_.max_abs_error;
                }
                else
                {
                    out << "its data-dependent part reaches only " << bound
                        << " (||w_k|| * input_norm_bound), so it would keep fewer than "
                        << coefficient_min_output_precision_bits << " bits";
                }
                out << ". Every output's noise scales with ||W||_F of the whole head (" << frobenius
                    << "), not with its own row (||w_" << k << "|| = " << row_norm
                    << "); use the batch layout (its errors follow each row's own norm), balance the rows' norms, or "
                       "pass a larger max_abs_error";
                throw ParameterError(out.str());
            }
        }
    }

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
        check_coefficient_precision(weights, bias, weight_scale);

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
        bias_values_.assign(out_dim_, 0);
        for (std::size_t k = 0; k < out_dim_; k++)
        {
            bias_values_[k] = bias_poly_ntt_[k * in_dim_ + in_dim_ - 1];
        }
        const auto &tables = cd->small_ntt_tables()[0];
        detail::forward_ntt(weight_poly_ntt_.data(), tables);
        detail::forward_ntt(bias_poly_ntt_.data(), tables);
        if (out_dim_ <= compact_direct_max_outputs)
        {
            // Coefficient t of a polynomial is N^-1 sum_j a(r_j) r_j^-t over the NTT's evaluation
            // points r_j, and (r_j^-t)_j is the NTT of the monomial X^-t = -X^(N-t) (X^N = -1),
            // whatever order the transform lists its points in. So row t is N^-1 NTT(-X^(N-t)),
            // times the weight polynomial to fold the product in.
            std::uint64_t n_inverse = 0;
            if (!seal::util::try_invert_uint_mod(n, q, n_inverse))
            {
                throw std::logic_error("N is not invertible modulo the data prime");
            }
            value_rows_.assign(out_dim_ * n, 0);
            for (std::size_t k = 0; k < out_dim_; k++)
            {
                const std::size_t t = k * in_dim_ + in_dim_ - 1;
                std::uint64_t *row = value_rows_.data() + k * n;
                if (t == 0)
                {
                    row[0] = 1;
                }
                else
                {
                    row[n - t] = q.value() - 1; // -X^(N - t)
                }
                detail::forward_ntt(row, tables);
                seal::util::multiply_poly_scalar_coeffmod(row, n, n_inverse, q, row);
                seal::util::dyadic_product_coeffmod(row, weight_poly_ntt_.data(), n, q, row);
            }
        }
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

    CompactBatch LinearPlan::apply_compact(const EncryptedBatch &batch, int threads) const
    {
        if (layout_ != Layout::coefficient)
        {
            throw LayoutError(
                std::string("compact replies exist for the coefficient layout only; this plan is in the '") +
                layout_name(layout_) + "' layout");
        }
        if (value_rows_.empty())
        {
            return CompactBatch::from_batch(apply(batch, threads), threads);
        }
        check_input(batch);
        const auto cd = context_->seal_context().get_context_data(input_.parms_id);
        const seal::Modulus &q = cd->parms().coeff_modulus().front();
        const std::size_t n = cd->parms().poly_modulus_degree();
        const auto &tables = cd->small_ntt_tables()[0];
        // products are below q^2 < 2^(2 bits): a 128-bit sum holds 2^(128 - 2 bits) of them
        const int spare_bits = 128 - 2 * q.bit_count();
        const std::size_t block = spare_bits >= 20 ? n : std::min(n, std::size_t(1) << spare_bits);
        CompactBatch out =
            CompactBatch::sized(context_, batch.rows(), out_dim_, in_dim_, output_scale_, output_norm_bound_);
        const auto &cts = batch.ciphertexts();
        parallel_for(cts.size(), threads, [&](std::size_t m) {
            const std::uint64_t *c0 = cts[m].data(0);
            std::vector<std::uint64_t> values(out_dim_);
            for (std::size_t k = 0; k < out_dim_; k++)
            {
                const std::uint64_t *row = value_rows_.data() + k * n;
                std::uint64_t value = bias_values_[k];
                for (std::size_t start = 0; start < n; start += block)
                {
                    unsigned __int128 acc = 0;
                    const std::size_t end = std::min(n, start + block);
                    for (std::size_t i = start; i < end; i++)
                    {
                        acc += static_cast<unsigned __int128>(c0[i]) * row[i];
                    }
                    const std::uint64_t words[2] = { static_cast<std::uint64_t>(acc), static_cast<std::uint64_t>(acc >> 64) };
                    value = seal::util::add_uint_mod(value, seal::util::barrett_reduce_128(words, q), q);
                }
                values[k] = value;
            }
            std::vector<std::uint64_t> c1(n);
            seal::util::dyadic_product_coeffmod(cts[m].data(1), weight_poly_ntt_.data(), n, q, c1.data());
            detail::inverse_ntt(c1.data(), tables);
            out.switch_row(m, values.data(), c1.data());
        });
        return out;
    }
} // namespace hevit
