// Copyright (c) hevit developers. MIT license.
#pragma once

#include "hevit/compact_batch.h"
#include "hevit/encrypted_batch.h"
#include "hevit/packing.h"
#include "hevit/public_context.h"
#include <memory>
#include <vector>

namespace hevit
{
    /**
    Where a plan's inputs live when they are not fresh ciphertexts: a stage inside a larger plan
    (the two-layer head) reads ciphertexts at a lower level and another scale.
    */
    struct PlanInput
    {
        /** Level of the input ciphertexts. */
        seal::parms_id_type parms_id{};
        /** Scale of the input ciphertexts. */
        double scale = 0.0;
        /** Batch layout: largest weight scale (bits) to use, 0 for no cap (a stage that rescales
        its output by the last prime wants weights at about that prime's size). */
        int max_weight_scale_bits = 0;
        /** Sample layout: when rescaling would leave too little headroom, keep the result at
        input_scale * weight_scale instead of refusing the layer. */
        bool allow_unrescaled = false;
        /** Sample layout: baby/giant split with the fewest rotations (see rotation_steps). */
        bool fewest_key_switches = false;
        /** Coefficient layout: largest error (value units) any output may carry; 0 for the
        default rule (every output keeps coefficient_min_output_precision_bits of its bound). */
        double max_abs_error = 0.0;
    };

    /**
    A compiled plaintext linear layer y = W x + b (W: out_dim x in_dim) evaluated on encrypted
    rows. compile() does all static work once (weight quantisation or encoding at the right level
    and scale, rotation schedule, Galois-key check); apply() does only ciphertext work and may be
    called concurrently from many threads.

    batch layout: out[g, k] = sum_j w_kj * in[g, j] computed directly on the RNS limbs with the
    weights as small signed integers (scale 2^weight_scale_bits), 128-bit lazy accumulation and
    one reduction per coefficient. No rotation, no relinearisation, no Galois key.

    coefficient layout: rows sit in the coefficients; one NTT-domain product with the weight
    polynomial (row k of W reversed at offset k D, integer weights at 2^weight_scale_bits) puts
    output k at coefficient k D + D - 1 (needs C D <= N; the negacyclic wrap of the other terms
    never reaches those coefficients then). No rotation, no key, no FFT.

    sample layout: hybrid diagonal method with baby-step/giant-step. With C' = next_pow2(out_dim)
    and D' = max(next_pow2(in_dim), C'), z = sum_i diag_i * rot(x, i) over C' generalised
    diagonals, then log2(D'/C') rotate-and-add folds leave y_k in slot k. Key switches per
    ciphertext: (baby - 1) + (giant - 1) + log2(D'/C'). When the context has two or more data
    primes, diagonals are encoded at the scale of the last data prime and the result is rescaled
    once at the very end: giant steps and folds run while values sit at scale
    input_scale * weight_scale, where key-switching noise (absolute, set by q/P) is negligible.
    Only the baby-step rotations see the input scale. With one data prime the weight scale is
    sized from the norm bound instead.

    Results never wrap the modulus: compile() sizes scales from a public bound on the L2 norm of
    the input rows (Cauchy-Schwarz: |y_k| <= ||w_k|| * bound + |b_k|) and refuses a layer that
    cannot fit.

    Coefficient layout precision: the dense noise polynomial of the input meets every weight of
    the head in the product, so every output carries noise of std sigma ||W||_F / input_scale
    (sigma: one fresh secret-key noise coefficient and the rounding of the value), whatever its
    own row's norm; the weight rounding adds at most 2^-(weight_scale_bits + 1) sqrt(nnz_k) bound.
    compile() derives each output's error (coefficient_error_sigmas standard deviations plus the
    worst-case rounding, output_error_bounds()) and refuses the head when one exceeds
    2^-coefficient_min_output_precision_bits of the bound ||w_k|| bound on that output's
    data-dependent part (zero rows, whose output is their bias, are exempt), or the caller's
    max_abs_error: a head with one large row and small others would otherwise return logits
    buried in noise.
    */
    class LinearPlan
    {
    public:
        /**
        Rotation steps a sample-layout plan of this shape needs (empty for the batch layout).
        fewest_key_switches picks the baby/giant split with the fewest rotations overall instead
        of the fewest baby steps (baby steps act on the input at its scale; at a large scale their
        key-switching noise does not matter).
        */
        /** Bits of precision (relative to its bound) every coefficient-layout output must keep
        when no max_abs_error is given. */
        static constexpr double coefficient_min_output_precision_bits = 10.0;

        /** Standard deviations of the noise the coefficient layout's error bound covers. */
        static constexpr double coefficient_error_sigmas = 7.0;

        static std::vector<int> rotation_steps(
            const CkksParams &params, std::size_t in_dim, std::size_t out_dim, Layout layout,
            bool fewest_key_switches = false);

        /**
        @param weights row-major out_dim x in_dim
        @param bias out_dim values or nullptr
        @param input_norm_bound bound on input row norms; 0 means the context's max_norm (negative,
        NaN or infinite: ValueRangeError)
        @param max_abs_error coefficient layout: largest error an output may carry (value units);
        0 for the default rule (see the class comment)
        @throws LayoutError, ValueRangeError (also for a negative or non-finite max_abs_error),
        MissingKeyError (naming the step), ParameterError (layer does not fit the modulus, or a
        coefficient-layout output would carry more error than allowed)
        */
        LinearPlan(
            std::shared_ptr<const PublicContext> context, const double *weights, std::size_t out_dim,
            std::size_t in_dim, const double *bias, Layout layout, double input_norm_bound,
            double max_abs_error = 0.0);

        /**
        A plan whose inputs sit at input.parms_id and input.scale (a stage of a larger plan).

        @throws as above
        */
        LinearPlan(
            std::shared_ptr<const PublicContext> context, const double *weights, std::size_t out_dim,
            std::size_t in_dim, const double *bias, Layout layout, double input_norm_bound, const PlanInput &input);

        /**
        Evaluates the layer on batch.

        @throws ContextMismatchError, LayoutError, ValueRangeError (input bound above the plan's)
        */
        EncryptedBatch apply(const EncryptedBatch &batch, int threads) const;

        /**
        Coefficient layout: the layer's compact reply, bit for bit what
        CompactBatch::from_batch(apply(batch)) gives, at a fraction of its cost. Each output value
        is read straight from the NTT-domain product as one inner product with a row precomputed
        at compile (row t of the inverse NTT times the weight polynomial: C N multiply-adds instead
        of a product and a whole inverse NTT of c0); only c1 is multiplied and transformed whole.
        Layers with more than compact_direct_max_outputs outputs take apply() then
        CompactBatch::from_batch (same bytes).

        @throws as apply(), LayoutError for another layout
        */
        CompactBatch apply_compact(const EncryptedBatch &batch, int threads) const;

        /** Most outputs for which apply_compact reads values directly (C N precomputed words). */
        static constexpr std::size_t compact_direct_max_outputs = 16;

        /**
        The checks apply() makes before any ciphertext work: key set, layout, width, level and
        scale, slot period, norm bound.

        @throws ContextMismatchError, LayoutError, ValueRangeError
        */
        void check_input(const EncryptedBatch &batch) const;

        /**
        The layer on ciphertexts already checked to sit at this plan's input level, scale and
        period (a stage of a larger plan); rows is the logical row count.
        */
        std::vector<seal::Ciphertext> evaluate(const std::vector<seal::Ciphertext> &in, std::size_t rows, int threads) const;

        /** Sample layout: slot period of the output rows (the padded out_dim); batch layout: 0. */
        std::size_t output_period() const noexcept { return layout_ == Layout::sample ? padded_out_ : 0; }
        /** Level and scale of the outputs. */
        const seal::parms_id_type &output_parms_id() const noexcept { return output_parms_id_; }
        double output_scale() const noexcept { return output_scale_; }
        /** Largest |y_k| the inputs' norm bound allows. */
        double max_abs_output() const noexcept { return max_abs_output_; }
        Layout layout() const noexcept { return layout_; }
        std::size_t in_dim() const noexcept { return in_dim_; }
        std::size_t out_dim() const noexcept { return out_dim_; }
        const std::vector<int> &steps() const noexcept { return steps_; }
        double input_norm_bound() const noexcept { return input_norm_bound_; }
        double output_norm_bound() const noexcept { return output_norm_bound_; }
        /** Coefficient layout: the derived error bound of each output (value units, for fresh
        secret-key encryptions within the norm bound); empty for the other layouts. */
        const std::vector<double> &output_error_bounds() const noexcept { return output_error_bounds_; }
        /** log2 of the weight scale (batch layout, or sample layout with one data prime). */
        double weight_scale_bits() const noexcept { return weight_scale_bits_; }
        /** Key switches per ciphertext in apply (0 for the batch layout). */
        std::size_t key_switches() const noexcept;
        /** Sample layout schedule: baby-step rotations (at the input scale), giant steps, folds. */
        std::size_t baby_rotations() const noexcept { return layout_ == Layout::sample ? baby_ - 1 : 0; }
        std::size_t giant_rotations() const noexcept { return layout_ == Layout::sample ? giant_ - 1 : 0; }
        std::size_t fold_rotations() const noexcept { return key_switches() - baby_rotations() - giant_rotations(); }
        /** True when the sample-layout result is rescaled once (two or more data primes). */
        bool rescales() const noexcept { return rescale_; }

    private:
        void compile(const double *weights, const double *bias);
        std::vector<seal::Ciphertext> apply_batch(const std::vector<seal::Ciphertext> &in, std::size_t rows, int threads) const;
        std::vector<seal::Ciphertext> apply_sample(const std::vector<seal::Ciphertext> &in, int threads) const;
        std::vector<seal::Ciphertext> apply_coefficient(const std::vector<seal::Ciphertext> &in, int threads) const;
        void compile_batch(const double *weights, const double *bias);
        void compile_sample(const double *weights, const double *bias);
        void compile_coefficient(const double *weights, const double *bias);
        void check_coefficient_precision(const double *weights, const double *bias, double weight_scale);

        std::shared_ptr<const PublicContext> context_;
        PlanInput input_;
        Layout layout_;
        std::size_t in_dim_;
        std::size_t out_dim_;
        double input_norm_bound_;
        double output_norm_bound_ = 0.0;
        double max_abs_output_ = 0.0;
        double weight_scale_bits_ = 0.0;
        std::vector<int> steps_;

        // batch layout
        std::vector<std::int64_t> int_weights_;           // out_dim x in_dim
        std::vector<std::size_t> active_columns_;         // columns with a nonzero weight
        std::vector<std::vector<std::uint64_t>> bias_ntt_; // out_dim x (primes * N), NTT form

        // coefficient layout: W as one polynomial (row k reversed at offset k D) and the bias at
        // coefficients k D + D - 1, both in NTT form over the one data prime
        std::vector<std::uint64_t> weight_poly_ntt_;
        std::vector<std::uint64_t> bias_poly_ntt_;
        // apply_compact: out_dim x N words (row k D + D - 1 of the inverse NTT times the weight
        // polynomial, both NTT-indexed) and the bias residues at those coefficients
        std::vector<std::uint64_t> value_rows_;
        std::vector<std::uint64_t> bias_values_;
        std::vector<double> output_error_bounds_;

        // sample layout
        std::size_t period_ = 0; // D'
        std::size_t padded_out_ = 0; // C'
        std::size_t baby_ = 1;
        std::size_t giant_ = 1;
        std::vector<std::vector<seal::Plaintext>> diagonals_; // [giant][baby], empty plaintext = zero
        std::vector<bool> diagonal_nonzero_;                  // giant * baby_ + baby
        std::vector<bool> baby_used_;                         // baby steps with a nonzero diagonal
        std::vector<bool> giant_used_;                        // giant steps with a nonzero diagonal
        seal::Plaintext bias_plain_;
        bool rescale_ = false;
        double output_scale_ = 0.0;
        seal::parms_id_type output_parms_id_{};
    };
} // namespace hevit
