// Copyright (c) hevit developers. MIT license.
// LinearPlan: compilation entry, input checks and dispatch; the kernels live in
// linear_plan_batch.cpp, linear_plan_sample.cpp and linear_plan_coefficient.cpp.
#include "hevit/linear_plan.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/parallel.h"
#include "sample_shape.h"
#include <algorithm>
#include <cmath>
#include <sstream>

namespace hevit
{
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
        const detail::SampleShape shape = detail::sample_shape(params.poly_modulus_degree / 2, in_dim, out_dim, fewest_key_switches);
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
        PlanInput fresh_input(const PublicContext &context, double max_abs_error)
        {
            if (!std::isfinite(max_abs_error) || max_abs_error < 0)
            {
                throw ValueRangeError("max_abs_error must be a positive finite number (or 0 for the default rule)");
            }
            PlanInput input;
            input.parms_id = context.data_parms_id();
            input.scale = context.scale();
            input.max_abs_error = max_abs_error;
            return input;
        }
    } // namespace

    LinearPlan::LinearPlan(
        std::shared_ptr<const PublicContext> context, const double *weights, std::size_t out_dim, std::size_t in_dim,
        const double *bias, Layout layout, double input_norm_bound, double max_abs_error)
        : LinearPlan(
              context, weights, out_dim, in_dim, bias, layout, input_norm_bound, fresh_input(*context, max_abs_error))
    {}

    LinearPlan::LinearPlan(
        std::shared_ptr<const PublicContext> context, const double *weights, std::size_t out_dim, std::size_t in_dim,
        const double *bias, Layout layout, double input_norm_bound, const PlanInput &input)
        : context_(std::move(context)), input_(input), layout_(layout), in_dim_(in_dim), out_dim_(out_dim),
          input_norm_bound_(detail::resolve_norm_bound(input_norm_bound, context_->params().max_norm))
    {
        if (!context_->seal_context().get_context_data(input_.parms_id) || !(input_.scale > 0))
        {
            throw ParameterError("plan input level or scale does not belong to this context");
        }
        if (in_dim == 0 || out_dim == 0)
        {
            throw LayoutError("weights must be a non-empty (out_dim, in_dim) matrix");
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
        return (baby_ - 1) + (giant_ - 1) + detail::ceil_log2(period_ / padded_out_);
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
        for (const auto &ct : batch.ciphertexts())
        {
            if (detail::is_transparent(ct))
            {
                throw SerializationError("a transparent ciphertext (c1 = 0) is not an encryption: refused");
            }
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

} // namespace hevit
