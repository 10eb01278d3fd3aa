// Copyright (c) hevit developers. MIT license.
#pragma once

#include "hevit/encrypted_batch.h"
#include "hevit/linear_plan.h"
#include "hevit/packing.h"
#include "hevit/public_context.h"
#include <memory>
#include <vector>

namespace hevit
{
    /**
    A compiled two-layer head y = W2 (W1 x + b1)^2 + b2 (W1: hidden x in_dim, W2: out_dim x
    hidden, square taken element-wise) evaluated on encrypted rows, with the plan/apply split of
    LinearPlan: compile() quantises or encodes both layers at the levels and scales they will see,
    apply() does only ciphertext work.

    Both layouts carry two rows per complex slot (real part a, imaginary part b), and squaring a
    complex slot mixes them: (a + ib)^2 = a^2 - b^2 + 2iab. The square stage separates them with
    complex conjugation and puts both squares back in their own halves, exactly:
    - layer 1 is evaluated with the stacked weights [W1; k W1] and bias [b1; k b1], k = 2^(-1/4)
      (one multiply-accumulate pass in the batch layout, one diagonal plan in the sample layout),
      giving h = a + ib and h' = k h;
    - u = h + conj(h) = 2a and v = h' - conj(h') = 2ik b;
    - p = X^(N/4) + X^(3N/4) is an integer polynomial that evaluates to i sqrt(2) at every slot of
      SEAL's encoding (slot roots zeta^(3^j): zeta^(k N/4) + zeta^(3k N/4) = i sqrt(2) for k = 1, 3
      mod 8), so T = u^2 - p v^2 = 4a^2 - i sqrt(2) (-4 k^2 b^2) = 4 (a^2 + i b^2), since
      k^2 sqrt(2) = 1. No constant is rounded; the factor 4 is folded into W2.
    The stage costs two conjugations (batch: per hidden unit; sample: one, plus one rotation
    that lines up the k-block) and one relinearisation per squared ciphertext.

    Levels (at least three data primes): layer 1 on fresh ciphertexts; one rescale; the squares;
    relinearise and rescale; layer 2 at the level that is left. In the batch layout the first
    layer's integer weights are quantised at about the size of the prime the rescale removes, and
    the conjugations act before that rescale, where their key-switching noise is negligible. In
    the sample layout layer 1 leaves its outputs replicated with period next_pow2(2 hidden) in
    every slot, exactly the input the diagonal method of layer 2 needs.

    Results never wrap: compile() bounds the hidden pre-activations from the public input norm
    bound (|h_u| <= ||w1_u|| * bound + |b1_u|), the squares and the outputs from those, and refuses
    a head that does not fit the modulus.
    */
    class MlpPlan
    {
    public:
        /**
        Evaluation keys a plan of this shape needs: relinearisation and conjugation always, the
        rotation steps of both layers in the sample layout.
        */
        static EvaluationKeySpec evaluation_keys(
            const CkksParams &params, std::size_t in_dim, std::size_t hidden, std::size_t out_dim, Layout layout);

        /**
        @param w1 row-major hidden x in_dim, b1 hidden values (or nullptr)
        @param w2 row-major out_dim x hidden, b2 out_dim values (or nullptr)
        @param input_norm_bound bound on input row norms; 0 means the context's max_norm (negative,
        NaN or infinite: ValueRangeError)
        @throws MissingKeyError (relinearisation, conjugation or a rotation key missing),
        ParameterError (fewer than three data primes, or a stage that does not fit the modulus),
        LayoutError, ValueRangeError
        */
        MlpPlan(
            std::shared_ptr<const PublicContext> context, const double *w1, std::size_t hidden, std::size_t in_dim,
            const double *b1, const double *w2, std::size_t out_dim, const double *b2, Layout layout,
            double input_norm_bound);

        /**
        Evaluates the head; the result has logical shape (rows, out_dim).

        @throws ContextMismatchError, LayoutError, ValueRangeError (input bound above the plan's)
        */
        EncryptedBatch apply(const EncryptedBatch &batch, int threads) const;

        Layout layout() const noexcept { return layout_; }
        std::size_t in_dim() const noexcept { return first_->in_dim(); }
        std::size_t hidden() const noexcept { return hidden_; }
        std::size_t out_dim() const noexcept { return second_->out_dim(); }
        /** Rotation steps of both layers (empty for the batch layout). */
        std::vector<int> rotation_steps() const;
        /** Key switches per ciphertext: rotations of both layers, plus one conjugation and one
        relinearisation per squared ciphertext (per hidden unit in the batch layout). */
        std::size_t key_switches() const noexcept;
        /** Public bound on |h_u|, the hidden pre-activations. */
        double hidden_bound() const noexcept { return hidden_bound_; }
        double input_norm_bound() const noexcept { return first_->input_norm_bound(); }
        double output_norm_bound() const noexcept { return second_->output_norm_bound(); }
        const LinearPlan &first() const noexcept { return *first_; }
        const LinearPlan &second() const noexcept { return *second_; }

    private:
        /** T = (h + conj h)^2 - p (h' - conj h')^2, relinearised and rescaled. */
        seal::Ciphertext square_stage(seal::Ciphertext h, seal::Ciphertext h_scaled, const seal::Evaluator &evaluator) const;

        std::shared_ptr<const PublicContext> context_;
        Layout layout_;
        std::unique_ptr<LinearPlan> first_;
        std::unique_ptr<LinearPlan> second_;
        /** Batch layout: the first layer's output is rescaled once before squaring. */
        bool rescale_hidden_ = false;
        std::size_t hidden_ = 0;
        /** Batch layout: false for hidden units whose square was folded into layer 2's bias. */
        std::vector<bool> squared_unit_;
        /** p = X^(N/4) + X^(3N/4) (i sqrt(2) in every slot), NTT form, at the level of the squares. */
        seal::Plaintext i_sqrt2_;
        double hidden_bound_ = 0.0;
    };
} // namespace hevit
