// Copyright (c) hevit developers. MIT license.
#include "hevit/discrete_gaussian.h"
#include "hevit/errors.h"
#include <cmath>
#include <sstream>

namespace hevit
{
    namespace
    {
        using u128 = unsigned __int128;

        /** Mantissa bits of a representable sigma: m in [2^7, 2^8). */
        constexpr int mantissa_bits = 8;
        constexpr int min_exponent = -7;

        /** The Bernoulli(exp(-gamma)) loop of Algorithm 1 stops at K = max_k: the probability of
        getting there is below 1 / (max_k - 1)!, and d * max_k must fit 127 bits for d < 2^114. */
        constexpr std::uint64_t max_k = std::uint64_t(1) << 13;

        /** The Laplace loop counts V below this (so (V - 1)^2 < 2^114); reaching it has
        probability exp(-2^57). */
        constexpr std::uint64_t max_v = std::uint64_t(1) << 57;

        /** The same for sigma < 128 (then (|Y| t 4^k - m^2)^2 < 2^56 (V + 1)^2 must fit 126 bits). */
        constexpr std::uint64_t max_v_rational = std::uint64_t(1) << 34;

        unsigned trailing_zeros(u128 v) noexcept
        {
            const auto lo = static_cast<std::uint64_t>(v);
            if (lo != 0)
            {
                return static_cast<unsigned>(__builtin_ctzll(lo));
            }
            return 64u + static_cast<unsigned>(__builtin_ctzll(static_cast<std::uint64_t>(v >> 64)));
        }

        unsigned bit_length(u128 v) noexcept
        {
            const auto hi = static_cast<std::uint64_t>(v >> 64);
            if (hi != 0)
            {
                return 128u - static_cast<unsigned>(__builtin_clzll(hi));
            }
            const auto lo = static_cast<std::uint64_t>(v);
            return lo == 0 ? 0u : 64u - static_cast<unsigned>(__builtin_clzll(lo));
        }

        /** (mantissa, exponent) of representable_sigma, after validation. */
        void split_sigma(double requested, std::uint64_t &mantissa, int &exponent)
        {
            if (!std::isfinite(requested) || requested < 1.0 || requested > DiscreteGaussian::max_sigma)
            {
                std::ostringstream out;
                out << "flooding sigma must be a finite number in [1, 2^56], got " << requested;
                throw ParameterError(out.str());
            }
            int binary_exponent = 0;
            std::frexp(requested, &binary_exponent); // requested = f 2^binary_exponent, f in [0.5, 1)
            exponent = binary_exponent - mantissa_bits;
            // requested / 2^exponent is in [128, 256) and exact (a power-of-two scaling)
            double m = std::ceil(std::ldexp(requested, -exponent));
            if (m >= 256.0)
            {
                m = 128.0;
                exponent++;
            }
            mantissa = static_cast<std::uint64_t>(m);
            if (exponent < min_exponent)
            {
                throw ParameterError("flooding sigma below 1"); // unreachable after the range check
            }
        }
    } // namespace

    double DiscreteGaussian::representable_sigma(double requested)
    {
        std::uint64_t mantissa = 0;
        int exponent = 0;
        split_sigma(requested, mantissa, exponent);
        return std::ldexp(static_cast<double>(mantissa), exponent);
    }

    DiscreteGaussian::DiscreteGaussian(double sigma, ChaCha20Stream &stream) : stream_(stream)
    {
        std::uint64_t mantissa = 0;
        int exponent = 0;
        split_sigma(sigma, mantissa, exponent);
        sigma_ = std::ldexp(static_cast<double>(mantissa), exponent);
        mantissa_ = mantissa;
        if (exponent >= 0)
        {
            t_ = mantissa << exponent; // sigma itself
            shift_ = 0;
        }
        else
        {
            shift_ = static_cast<unsigned>(-exponent);
            t_ = (mantissa >> shift_) + 1; // floor(sigma) + 1, as in Canonne et al.
        }
    }

    /**
    The coins of one sample: bits of the sampler's stream (through its word buffer and bit
    reservoir, copied in and written back by DiscreteGaussian::sample) and the exact
    Bernoulli trials of Canonne et al. built on them. Defined here, inline, so the compiler
    can fuse the trials (member functions of an exported class are called through the PLT).
    */
struct DiscreteGaussian::Coins
    {
        ChaCha20Stream &stream;
        std::uint64_t *words;
        std::size_t word_count;
        std::size_t next_word;
        std::uint64_t reservoir;
        unsigned reservoir_bits;

        /** The next `bits` bits of the stream (bits <= 64), as the low bits of the result. */
        std::uint64_t take(unsigned bits)
        {
            if (reservoir_bits >= bits)
            {
                const std::uint64_t out = bits == 64 ? reservoir : reservoir & ((std::uint64_t(1) << bits) - 1);
                reservoir = bits == 64 ? 0 : reservoir >> bits;
                reservoir_bits -= bits;
                return out;
            }
            // the reservoir's remaining bits are the low ones, the next word supplies the rest
            const unsigned have = reservoir_bits;
            std::uint64_t out = reservoir;
            if (next_word == word_count)
            {
                stream.fill(words, word_count);
                next_word = 0;
            }
            const std::uint64_t word = words[next_word];
            words[next_word++] = 0;
            const unsigned need = bits - have;
            const std::uint64_t part = need == 64 ? word : word & ((std::uint64_t(1) << need) - 1);
            out |= have == 0 ? part : part << have;
            reservoir = need == 64 ? 0 : word >> need;
            reservoir_bits = 64 - need;
            return out;
        }

        /** The next `bits` bits (bits <= 128). */
        u128 take_wide(unsigned bits)
        {
            if (bits <= 64)
            {
                return take(bits);
            }
            const u128 low = take(64);
            return (static_cast<u128>(take(bits - 64)) << 64) | low;
        }

        /**
        Uniform in [0, bound), 1 <= bound < 2^64: Lemire's multiply-and-reject ("Fast random
        integer generation in an interval", 2019), exact: the high half of r * bound is
        uniform once the low half is at least 2^w mod bound, a check that needs a division
        only when the low half is below bound. 32-bit draws for bounds below 2^32.
        */
        std::uint64_t uniform_small(std::uint64_t bound)
        {
            if (bound <= 0xFFFFFFFFu)
            {
                const auto b = static_cast<std::uint32_t>(bound);
                std::uint64_t product = take(32) * bound;
                if (static_cast<std::uint32_t>(product) < b)
                {
                    const std::uint32_t threshold = static_cast<std::uint32_t>(0u - b) % b;
                    while (static_cast<std::uint32_t>(product) < threshold)
                    {
                        product = take(32) * bound;
                    }
                }
                return product >> 32;
            }
            u128 product = static_cast<u128>(take(64)) * bound;
            if (static_cast<std::uint64_t>(product) < bound)
            {
                const std::uint64_t threshold = (0 - bound) % bound;
                while (static_cast<std::uint64_t>(product) < threshold)
                {
                    product = static_cast<u128>(take(64)) * bound;
                }
            }
            return static_cast<std::uint64_t>(product >> 64);
        }

        /** Uniform in [0, bound), bound >= 1: bound = odd * 2^s is uniform_small(odd) and s raw
        bits (every bound the sampler uses has an odd part below 2^44; the rest by rejection). */
        u128 uniform_below(u128 bound)
        {
            const unsigned s = trailing_zeros(bound);
            const u128 odd = bound >> s;
            if ((odd >> 64) == 0)
            {
                return (static_cast<u128>(uniform_small(static_cast<std::uint64_t>(odd))) << s) | take_wide(s);
            }
            const unsigned bits = bit_length(bound - 1);
            while (true)
            {
                const u128 v = take_wide(bits);
                if (v < bound)
                {
                    return v; // accepted with probability above 1/2
                }
            }
        }

        /**
        Bernoulli(numerator / denominator), numerator <= denominator < 2^127: U = high 2^s + low
        uniform in [0, denominator = odd 2^s) and U < numerator is decided by high alone
        unless high equals numerator's high part (then s low bits decide).
        */
        bool bernoulli(u128 numerator, u128 denominator)
        {
            const unsigned s = trailing_zeros(denominator);
            const u128 odd = denominator >> s;
            if ((odd >> 64) != 0)
            {
                return uniform_below(denominator) < numerator;
            }
            const u128 high = uniform_small(static_cast<std::uint64_t>(odd));
            const u128 numerator_high = numerator >> s;
            if (high != numerator_high)
            {
                return high < numerator_high;
            }
            if (s == 0)
            {
                return false;
            }
            return take_wide(s) < (numerator & ((static_cast<u128>(1) << s) - 1));
        }

        /** Bernoulli(exp(-gamma)) for gamma = numerator / denominator <= 1, denominator < 2^114
        (Algorithm 1: the first K with A_K = 0, A_k ~ Bernoulli(gamma / k); P(K odd) = exp(-gamma)). */
        bool bernoulli_exp_at_most_one(u128 numerator, u128 denominator)
        {
            std::uint64_t k = 1;
            while (bernoulli(numerator, denominator * k))
            {
                k++;
                if (k == max_k)
                {
                    throw ResourceError("discrete Gaussian sampler: Bernoulli(exp(-gamma)) loop reached 2^13 "
                                        "(probability below 1/8191!): the random stream is broken");
                }
            }
            return (k & 1) == 1;
        }

        /** Bernoulli(exp(-numerator / denominator)), denominator < 2^114, any gamma >= 0. */
        bool bernoulli_exp(u128 numerator, u128 denominator)
        {
            if (numerator == 0)
            {
                return true; // exp(0): Algorithm 1 would draw A_1 = 0 and return K = 1 without deciding anything
            }
            if (numerator <= denominator)
            {
                return bernoulli_exp_at_most_one(numerator, denominator);
            }
            // exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma)))
            for (u128 whole = numerator / denominator; whole > 0; whole--)
            {
                if (!bernoulli_exp_at_most_one(1, 1))
                {
                    return false;
                }
            }
            return bernoulli_exp_at_most_one(numerator % denominator, denominator);
        }
    };

    __int128 DiscreteGaussian::sample()
    {
        Coins coins{ stream_, words_.data(), words_.size(), next_word_, reservoir_, reservoir_bits_ };
        const __int128 z = draw(coins);
        next_word_ = coins.next_word;
        reservoir_ = coins.reservoir;
        reservoir_bits_ = coins.reservoir_bits;
        return z;
    }

    __int128 DiscreteGaussian::draw(Coins &coins) const
    {
        const u128 t = t_;
        const u128 two_t2 = 2 * t * t; // < 2^113
        // sigma = m / 2^k (k = shift_ > 0): sigma^2 / t = m^2 / (4^k t), so with A = |Y| t 4^k the
        // exponent is (A - m^2)^2 / (2 m^2 t^2 4^k); |Y| < t (V + 1) keeps A - m^2 below 2^63
        const u128 m2 = static_cast<u128>(mantissa_) * mantissa_;
        const u128 rational_denominator = shift_ == 0 ? 0 : (2 * m2 * t * t) << (2 * shift_); // < 2^46
        const std::uint64_t v_limit = shift_ == 0 ? max_v : max_v_rational;
        while (true)
        {
            // Algorithm 2, discrete Laplace of scale t: |Y| = U + t V
            const std::uint64_t u = static_cast<std::uint64_t>(coins.uniform_below(t));
            if (!coins.bernoulli_exp_at_most_one(u, t))
            {
                continue;
            }
            std::uint64_t v = 0;
            while (coins.bernoulli_exp_at_most_one(1, 1))
            {
                v++;
                if (v == v_limit)
                {
                    throw ResourceError("discrete Gaussian sampler: Laplace loop reached its limit (2^34 or "
                                        "more; probability below exp(-2^34)): the random stream is broken");
                }
            }
            const bool negative = coins.take(1) == 1;
            if (negative && u == 0 && v == 0)
            {
                continue; // -0 is rejected, so 0 is not counted twice
            }
            // Algorithm 3: accept with exp(-(|Y| - sigma^2 / t)^2 / (2 sigma^2))
            const u128 magnitude = static_cast<u128>(u) + t * v;
            bool accept;
            if (shift_ != 0)
            {
                const u128 a = (magnitude * t) << (2 * shift_);
                const u128 gap = a >= m2 ? a - m2 : m2 - a;
                accept = coins.bernoulli_exp(gap * gap, rational_denominator);
            }
            else if (v == 0)
            {
                // t = sigma: |Y| - sigma = u - t
                const u128 gap = t - u;
                accept = coins.bernoulli_exp(gap * gap, two_t2);
            }
            else
            {
                // ((v - 1) + u / t)^2 / 2 = (v - 1)^2 / 2 + (v - 1) u / t + u^2 / (2 t^2)
                const u128 w = v - 1;
                accept = coins.bernoulli_exp(w * w, 2) && coins.bernoulli_exp(w * u, t) &&
                         coins.bernoulli_exp(static_cast<u128>(u) * u, two_t2);
            }
            if (accept)
            {
                const auto value = static_cast<__int128>(magnitude);
                return negative ? -value : value;
            }
        }
    }
} // namespace hevit
