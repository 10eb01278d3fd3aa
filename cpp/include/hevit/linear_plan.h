// Copyright (c) hevit developers. MIT license.
#pragma once

#include "hevit/encrypted_batch.h"
#include "hevit/packing.h"
#include "hevit/public_context.h"
#include <memory>
#include <vector>

namespace hevit
{
    /**
    A compiled plaintext linear layer y = W x + b (W: out_dim x in_dim) evaluated on encrypted
    rows. compile() does all static work once (weight quantisation or encoding at the right level
    and scale, rotation schedule, Galois-key check); apply() does only ciphertext work and may be
    called concurrently from many threads.

    batch layout: out[g, k] = sum_j w_kj * in[g, j] computed directly on the RNS limbs with the
    weights as small signed integers (scale 2^weight_scale_bits), 128-bit lazy accumulation and
    one reduction per coefficient. No rotation, no relinearisation, no Galois key.

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
    */
    class LinearPlan
    {
    public:
        /** Rotation steps a sample-layout plan of this shape needs (empty for the batch layout). */
        static std::vector<int> rotation_steps(const CkksParams &params, std::size_t in_dim, std::size_t out_dim, Layout layout);

        /**
        @param weights row-major out_dim x in_dim
        @param bias out_dim values or nullptr
        @param input_norm_bound bound on input row norms; <= 0 means the context's max_norm
        @throws LayoutError, ValueRangeError, MissingKeyError (naming the step), ParameterError
        (layer does not fit the modulus)
        */
        LinearPlan(
            std::shared_ptr<const PublicContext> context, const double *weights, std::size_t out_dim,
            std::size_t in_dim, const double *bias, Layout layout, double input_norm_bound);

        /**
        Evaluates the layer on batch.

        @throws ContextMismatchError, LayoutError, ValueRangeError (input bound above the plan's)
        */
        EncryptedBatch apply(const EncryptedBatch &batch, int threads) const;

        Layout layout() const noexcept { return layout_; }
        std::size_t in_dim() const noexcept { return in_dim_; }
        std::size_t out_dim() const noexcept { return out_dim_; }
        const std::vector<int> &steps() const noexcept { return steps_; }
        double input_norm_bound() const noexcept { return input_norm_bound_; }
        double output_norm_bound() const noexcept { return output_norm_bound_; }
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
        EncryptedBatch apply_batch(const EncryptedBatch &batch, int threads) const;
        EncryptedBatch apply_sample(const EncryptedBatch &batch, int threads) const;
        void compile_batch(const double *weights, const double *bias);
        void compile_sample(const double *weights, const double *bias);

        std::shared_ptr<const PublicContext> context_;
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

        // sample layout
        std::size_t period_ = 0; // D'
        std::size_t padded_out_ = 0; // C'
        std::size_t baby_ = 1;
        std::size_t giant_ = 1;
        std::vector<std::vector<seal::Plaintext>> diagonals_; // [giant][baby], empty plaintext = zero
        std::vector<bool> diagonal_nonzero_;                  // giant * baby_ + baby
        seal::Plaintext bias_plain_;
        bool rescale_ = false;
        double output_scale_ = 0.0;
        seal::parms_id_type output_parms_id_{};
    };
} // namespace hevit
