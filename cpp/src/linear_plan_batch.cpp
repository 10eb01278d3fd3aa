// Copyright (c) hevit developers. MIT license.
// LinearPlan, batch layout: one feature per ciphertext, integer weights accumulated on RNS limbs
// (no rotation, no evaluation key).
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
        /** Coefficients accumulated per task: the 128-bit accumulators of one block stay in L1. */
        constexpr std::size_t accumulation_block = 128;
    } // namespace

    void LinearPlan::compile_batch(const double *weights, const double *bias)
    {
        const auto cd = context_->seal_context().get_context_data(input_.parms_id);
        const auto &primes = cd->parms().coeff_modulus();
        const std::size_t n = cd->parms().poly_modulus_degree();
        const double scale_log = std::log2(input_.scale);
        const double bound_log = std::log2(std::max(max_abs_output_, 1.0));
        // Results (complex slots up to sqrt(2) * bound) must stay below a quarter of the modulus.
        const double capacity = detail::log2_modulus(*cd) - detail::headroom_bits - scale_log - bound_log;
        double max_w = 0.0;
        for (std::size_t i = 0; i < out_dim_ * in_dim_; i++)
        {
            max_w = std::max(max_w, std::fabs(weights[i]));
        }
        // 128-bit accumulation of in_dim products c * w with c < 2^60 must not overflow.
        const double int_bits = std::min(
            62.0, detail::accumulator_bits - detail::prime_bits_max - std::ceil(std::log2(std::max<double>(in_dim_, 2))));
        const double int_cap = max_w > 0 ? int_bits - std::log2(max_w) : capacity;
        double e = std::floor(std::min(capacity, int_cap));
        if (input_.max_weight_scale_bits > 0)
        {
            e = std::min(e, static_cast<double>(input_.max_weight_scale_bits));
        }
        if (e < detail::min_weight_scale_bits)
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
        // Bias b_k at every row, encoded once at the output scale (apply adds it to c0 limb by
        // limb): in every coefficient when the batch sits in coefficients, else in every slot's
        // real and imaginary part (both halves of the batch).
        bias_ntt_.assign(out_dim_, std::vector<std::uint64_t>(primes.size() * n, 0));
        const double out_scale = input_.scale * weight_scale;
        output_scale_ = out_scale;
        output_parms_id_ = input_.parms_id;
        const bool in_coefficients = batch_in_coefficients(*context_);
        for (std::size_t k = 0; k < out_dim_ && bias; k++)
        {
            if (bias[k] == 0.0)
            {
                continue;
            }
            if (in_coefficients)
            {
                // |b_k| * out_scale <= max_abs_output * out_scale, below q / 4 by the weight scale
                std::fill(bias_ntt_[k].begin(), bias_ntt_[k].end(), detail::to_residue(bias[k] * out_scale, primes[0]));
                detail::forward_ntt(bias_ntt_[k].data(), cd->small_ntt_tables()[0]);
                continue;
            }
            const std::vector<std::complex<double>> slots(n / 2, { bias[k], bias[k] });
            seal::Plaintext plain;
            context_->encoder().encode(slots, cd->parms_id(), out_scale, plain);
            std::copy(plain.data(), plain.data() + primes.size() * n, bias_ntt_[k].begin());
        }
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
        const std::size_t blocks = n / accumulation_block;
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
            const std::size_t offset = l * n + block * accumulation_block;
            std::vector<__int128> acc(out_dim_ * accumulation_block, 0);
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
                    __int128 *a = acc.data() + k * accumulation_block;
                    for (std::size_t i = 0; i < accumulation_block; i++)
                    {
                        a[i] += static_cast<__int128>(w) * static_cast<std::int64_t>(src[i]);
                    }
                }
            }
            const seal::Modulus &q = primes[l];
            for (std::size_t k = 0; k < out_dim_; k++)
            {
                std::uint64_t *dst = out[g * out_dim_ + k].data(poly) + offset;
                const __int128 *a = acc.data() + k * accumulation_block;
                const std::uint64_t *bias = poly == 0 ? bias_ntt_[k].data() + offset : nullptr;
                for (std::size_t i = 0; i < accumulation_block; i++)
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

} // namespace hevit
