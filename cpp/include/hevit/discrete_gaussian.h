// Copyright (c) hevit developers. MIT license.
#pragma once

#include "hevit/prng.h"
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace hevit
{
    /**
    An exact sampler of the discrete Gaussian D_{Z,sigma} (P(x) proportional to
    exp(-x^2 / (2 sigma^2)) on the integers), using integer arithmetic only: the algorithms of
    Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential Privacy" (NeurIPS 2020),
    Algorithms 1-3, over bits of a ChaCha20Stream. No floating point touches a sample, so every
    machine draws the same integers from the same stream, and the output distribution is exact
    (not an approximation to some number of bits): the only randomness is the stream's.

    sigma is represented exactly as m * 2^e with an integer mantissa m in [128, 256) and an
    integer exponent e in [-7, 49] (sigma in [1, 2^56]): representable_sigma rounds a requested
    sigma UP to that form (at most 1/128, 0.8%, more noise). For e >= 0 the sampler runs
    Algorithm 3 with Laplace scale t = sigma (an integer): the accepted density is
    exp(-|y|/t) * exp(-(|y| - sigma^2/t)^2 / (2 sigma^2)) = exp(-y^2 / (2 sigma^2)) * const, which
    holds for any t > 0. Writing |y| = U + t V (U in [0, t), V >= 0, as Algorithm 2 draws them),
    the exponent (|y| - sigma)^2 / (2 sigma^2) is (t - U)^2 / (2 t^2) when V = 0 and
    (V - 1)^2 / 2 + (V - 1) U / t + U^2 / (2 t^2) when V >= 1: three rationals whose numerators
    and denominators stay below 2^114 for t <= 2^56 and any V below 2^57, and
    Bernoulli(exp(-(a + b + c))) is the product of three independent Bernoulli trials.
    For e < 0 (sigma = m / 2^k < 128) it runs Algorithm 3 as published, with t = floor(sigma) + 1
    and sigma^2 = m^2 / 4^k: the exponent is (|y| t 4^k - m^2)^2 / (2 m^2 t^2 4^k), one rational
    below 2^126 / 2^46 for any V below 2^34. The loops stop (ResourceError) only at counts whose
    probability is below exp(-2^34) or 1/8191!, i.e. never for a working stream.

    Cost: every coin is Bernoulli(n / d) with d = odd * 2^s, odd below 2^44: one 32- or 64-bit
    draw for a uniform below odd (Lemire's exact multiply-and-reject), and the s low bits only
    on a tie (about 280 ns of CPU per sample at sigma = 2^40 on the development machine).
    */
    class DiscreteGaussian
    {
    public:
        /** Largest sigma accepted (every intermediate quantity then fits 128 bits). */
        static constexpr double max_sigma = 72057594037927936.0; // 2^56

        /**
        The sigma the sampler uses for a requested one: the smallest m * 2^e >= requested with m
        an integer in [128, 256).

        @throws ParameterError if requested is not finite, below 1 or above 2^56
        */
        static double representable_sigma(double requested);

        /**
        A sampler of D_{Z, representable_sigma(sigma)} drawing from stream (not owned; it must
        outlive the sampler and no one else may read it meanwhile).

        @throws ParameterError as representable_sigma
        */
        DiscreteGaussian(double sigma, ChaCha20Stream &stream);

        /** The exact sigma of the samples. */
        double sigma() const noexcept { return sigma_; }

        /**
        One sample. Its magnitude is below 2^63 except with probability below exp(-8000) (the
        type is wide enough for every value the sampler can return).
        */
        __int128 sample();

    private:
        /** The stream bits and exact Bernoulli trials of one sample (defined in the .cpp). */
        struct Coins;

        /** One sample of Algorithm 3 from coins. */
        __int128 draw(Coins &coins) const;

        ChaCha20Stream &stream_;
        double sigma_;
        /** The mantissa m of sigma = m * 2^e. */
        std::uint64_t mantissa_;
        /** Laplace scale: sigma when e >= 0, floor(sigma) + 1 when e < 0. */
        std::uint64_t t_;
        /** -e when e < 0, else 0. */
        unsigned shift_;
        /** Stream words not yet used (refilled 16 at a time), and the unused bits of the last one. */
        std::array<std::uint64_t, 16> words_{};
        std::size_t next_word_ = 16;
        std::uint64_t reservoir_ = 0;
        unsigned reservoir_bits_ = 0;
    };

    namespace detail
    {
        /**
        Validates a flooding sigma for ciphertexts at the level of cd and returns the sigma the
        sampler uses (DiscreteGaussian::representable_sigma).

        @throws ParameterError for a sigma the sampler refuses, or when 64 sigma is not below a
        quarter of the level's modulus (flooding must never wrap)
        */
        double check_flooding_sigma(double sigma, const seal::SEALContext::ContextData &cd);

        /**
        Adds one D_{Z,sigma} sample from sampler to every coefficient of the NTT-form plaintext
        plain at the level of cd (the same integer reduced modulo each prime): each limb is taken
        to coefficient form, flooded and transformed back. noise is scratch space for the
        samples (resized to N, zeroed before returning).
        */
        void flood_plaintext(
            seal::Plaintext &plain, const seal::SEALContext::ContextData &cd, DiscreteGaussian &sampler,
            std::vector<__int128> &noise);
    } // namespace detail
} // namespace hevit
