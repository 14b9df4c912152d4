// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {FundToken} from "./FundToken.sol";

/// @notice The part of a Chainlink AggregatorV3 feed the manager reads (PriceFeed.sol is one).
interface INavFeed {
    function decimals() external view returns (uint8);

    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
}

/// @notice An issuer's instant mint and redeem desk for a tokenized fund, the pattern of Ondo OUSG's
/// instant manager, Superstate USTB's subscriptions and BUIDL's stablecoin redeemer: a verified
/// investor pays the stablecoin and is minted fund shares at the NAV of a feed, or has shares burnt
/// and is paid stablecoin, in one transaction, within the issuer's limits:
/// - the caller itself must be verified on the fund token (`NotEligible`), as these desks only serve
///   onboarded investors and never a third-party receiver;
/// - NAV per share is the feed's latest answer (8 decimals); a non-positive answer or, when
///   `maxNavAge` is set, one older than that reverts, and the feed's `updatedAt` is public so a bot can
///   see a stale price before it trades;
/// - mint and redeem fees in bps, charged on the USD side and paid to `feeRecipient` at once (they
///   never stay in the contract, so `availableLiquidity` is all redemption money);
/// - minimums in USD: a subscription's `usdIn`, a redemption's gross USD value (before the fee);
/// - rate limits in USD over fixed windows (Ondo's time-based limiter): a window opens at the first
///   subscription (redemption) after the previous one ended, and `remaining*` is what is left of it;
///   the redemption limit counts gross USD, which is what leaves the contract;
/// - redemptions are paid only from the stablecoin the contract holds (`InsufficientLiquidity`):
///   subscriptions' net USD stays here and adds to it, the issuer tops it up by plain transfer and
///   moves surplus to its custodian with `withdrawLiquidity`;
/// - rounding favours the fund: fees round up, shares minted and USD paid round down;
/// - `Pausable` (reverts with OpenZeppelin's `EnforcedPause()`).
contract IssuerManager is Ownable, Pausable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    struct RateLimit {
        uint256 limit; // USD (stablecoin units) per window; type(uint256).max: unlimited
        uint256 window; // seconds
        uint256 windowStart; // when the current window opened
        uint256 used; // USD used in the current window
    }

    uint256 public constant BPS = 10_000;
    uint256 public constant MAX_FEE_BPS = 1_000;
    uint256 public constant MAX_WINDOW = 3650 days;

    IERC20 public immutable stable;
    FundToken public immutable token;
    INavFeed public immutable navFeed;
    /// @dev shares = usd * scale / nav and usd = shares * nav / scale, for the three decimals.
    uint256 private immutable _scale;

    uint256 public mintFeeBps;
    uint256 public redeemFeeBps;
    address public feeRecipient;
    uint256 public minimumSubscription;
    uint256 public minimumRedemption;
    uint256 public maxNavAge; // seconds; 0: the manager does not check the feed's age
    RateLimit public subscriptionLimit;
    RateLimit public redemptionLimit;

    event Subscribed(address indexed account, uint256 usdIn, uint256 fee, uint256 shares);
    event Redeemed(address indexed account, uint256 shares, uint256 fee, uint256 usdOut);
    event MintFeeSet(uint256 bps);
    event RedeemFeeSet(uint256 bps);
    event FeeRecipientSet(address indexed recipient);
    event MinimumSubscriptionSet(uint256 usd);
    event MinimumRedemptionSet(uint256 usd);
    event SubscriptionLimitSet(uint256 limit, uint256 window);
    event RedemptionLimitSet(uint256 limit, uint256 window);
    event MaxNavAgeSet(uint256 maxAge);
    event LiquidityWithdrawn(address indexed to, uint256 amount);

    error NotEligible(address account);
    error ZeroAmount();
    error BelowMinimum(uint256 amount, uint256 minimum);
    error RateLimited(uint256 remaining);
    error InsufficientLiquidity(uint256 available, uint256 needed);
    error InvalidNav(int256 answer);
    error StaleNav(uint256 updatedAt, uint256 maxAge);
    error FeeTooHigh(uint256 bps);
    error InvalidWindow(uint256 window);
    error ZeroAddress();
    error UnsupportedDecimals(uint8 stable, uint8 token, uint8 feed);

    constructor(IERC20Metadata stable_, FundToken token_, INavFeed navFeed_, address feeRecipient_, address owner_)
        Ownable(owner_)
    {
        if (feeRecipient_ == address(0)) revert ZeroAddress();
        uint8 sd = stable_.decimals();
        uint8 td = token_.decimals();
        uint8 fd = navFeed_.decimals();
        if (uint256(td) + fd < sd || uint256(td) + fd - sd > 60) revert UnsupportedDecimals(sd, td, fd);
        stable = IERC20(address(stable_));
        token = token_;
        navFeed = navFeed_;
        _scale = 10 ** (uint256(td) + fd - sd);
        feeRecipient = feeRecipient_;
        subscriptionLimit = RateLimit(type(uint256).max, 1 days, 0, 0);
        redemptionLimit = RateLimit(type(uint256).max, 1 days, 0, 0);
    }

    // -- views ------------------------------------------------------------------------------------------

    /// @notice NAV per share in feed units and when it was published; reverts as a trade would.
    function nav() public view returns (uint256 navPerShare, uint256 updatedAt) {
        int256 answer;
        (, answer,, updatedAt,) = navFeed.latestRoundData();
        if (answer <= 0) revert InvalidNav(answer);
        if (maxNavAge != 0 && block.timestamp > updatedAt + maxNavAge) revert StaleNav(updatedAt, maxNavAge);
        navPerShare = uint256(answer);
    }

    /// @notice Shares a subscription of `usdIn` mints now, after the mint fee (limits not applied).
    function previewSubscribe(uint256 usdIn) public view returns (uint256 shares) {
        (, shares) = _quoteSubscribe(usdIn);
    }

    /// @notice Stablecoin a redemption of `shares` pays now, after the redeem fee (limits not applied).
    function previewRedeem(uint256 shares) public view returns (uint256 usdOut) {
        (,, usdOut) = _quoteRedeem(shares);
    }

    function availableLiquidity() public view returns (uint256) {
        return stable.balanceOf(address(this));
    }

    function remainingSubscription() external view returns (uint256) {
        return _remaining(subscriptionLimit);
    }

    function remainingRedemption() external view returns (uint256) {
        return _remaining(redemptionLimit);
    }

    // -- investors --------------------------------------------------------------------------------------

    function subscribe(uint256 usdIn) external whenNotPaused nonReentrant returns (uint256 shares) {
        _checkEligible(msg.sender);
        if (usdIn == 0) revert ZeroAmount();
        if (usdIn < minimumSubscription) revert BelowMinimum(usdIn, minimumSubscription);
        uint256 fee;
        (fee, shares) = _quoteSubscribe(usdIn);
        if (shares == 0) revert ZeroAmount();
        _consume(subscriptionLimit, usdIn);
        stable.safeTransferFrom(msg.sender, address(this), usdIn - fee);
        if (fee != 0) stable.safeTransferFrom(msg.sender, feeRecipient, fee);
        token.mint(msg.sender, shares);
        emit Subscribed(msg.sender, usdIn, fee, shares);
    }

    function redeem(uint256 shares) external whenNotPaused nonReentrant returns (uint256 usdOut) {
        _checkEligible(msg.sender);
        if (shares == 0) revert ZeroAmount();
        (uint256 gross, uint256 fee, uint256 out) = _quoteRedeem(shares);
        if (gross < minimumRedemption) revert BelowMinimum(gross, minimumRedemption);
        if (out == 0) revert ZeroAmount();
        _consume(redemptionLimit, gross);
        uint256 available = availableLiquidity();
        if (available < gross) revert InsufficientLiquidity(available, gross);
        token.burn(msg.sender, shares);
        stable.safeTransfer(msg.sender, out);
        if (fee != 0) stable.safeTransfer(feeRecipient, fee);
        emit Redeemed(msg.sender, shares, fee, out);
        return out;
    }

    // -- the issuer -------------------------------------------------------------------------------------

    function setMintFeeBps(uint256 bps) external onlyOwner {
        if (bps > MAX_FEE_BPS) revert FeeTooHigh(bps);
        mintFeeBps = bps;
        emit MintFeeSet(bps);
    }

    function setRedeemFeeBps(uint256 bps) external onlyOwner {
        if (bps > MAX_FEE_BPS) revert FeeTooHigh(bps);
        redeemFeeBps = bps;
        emit RedeemFeeSet(bps);
    }

    function setFeeRecipient(address recipient) external onlyOwner {
        if (recipient == address(0)) revert ZeroAddress();
        feeRecipient = recipient;
        emit FeeRecipientSet(recipient);
    }

    function setMinimumSubscription(uint256 usd) external onlyOwner {
        minimumSubscription = usd;
        emit MinimumSubscriptionSet(usd);
    }

    function setMinimumRedemption(uint256 usd) external onlyOwner {
        minimumRedemption = usd;
        emit MinimumRedemptionSet(usd);
    }

    /// @notice A new limit or window applies to the current window; what it has used is kept.
    function setSubscriptionLimit(uint256 limit, uint256 window) external onlyOwner {
        _setLimit(subscriptionLimit, limit, window);
        emit SubscriptionLimitSet(limit, window);
    }

    function setRedemptionLimit(uint256 limit, uint256 window) external onlyOwner {
        _setLimit(redemptionLimit, limit, window);
        emit RedemptionLimitSet(limit, window);
    }

    function setMaxNavAge(uint256 maxAge) external onlyOwner {
        maxNavAge = maxAge;
        emit MaxNavAgeSet(maxAge);
    }

    /// @notice Moves stablecoin that redemptions do not need to the issuer's custodian.
    function withdrawLiquidity(address to, uint256 amount) external onlyOwner {
        stable.safeTransfer(to, amount);
        emit LiquidityWithdrawn(to, amount);
    }

    function pause() external onlyOwner {
        _pause();
    }

    function unpause() external onlyOwner {
        _unpause();
    }

    // -- internals --------------------------------------------------------------------------------------

    function _checkEligible(address account) private view {
        if (!token.isVerified(account)) revert NotEligible(account);
    }

    function _quoteSubscribe(uint256 usdIn) private view returns (uint256 fee, uint256 shares) {
        (uint256 price,) = nav();
        fee = Math.mulDiv(usdIn, mintFeeBps, BPS, Math.Rounding.Ceil);
        shares = Math.mulDiv(usdIn - fee, _scale, price);
    }

    function _quoteRedeem(uint256 shares) private view returns (uint256 gross, uint256 fee, uint256 usdOut) {
        (uint256 price,) = nav();
        gross = Math.mulDiv(shares, price, _scale);
        fee = Math.mulDiv(gross, redeemFeeBps, BPS, Math.Rounding.Ceil);
        usdOut = gross - fee;
    }

    function _remaining(RateLimit storage r) private view returns (uint256) {
        if (block.timestamp >= r.windowStart + r.window) return r.limit;
        return r.used >= r.limit ? 0 : r.limit - r.used;
    }

    function _consume(RateLimit storage r, uint256 usd) private {
        if (r.limit == type(uint256).max) return;
        if (block.timestamp >= r.windowStart + r.window) {
            r.windowStart = block.timestamp;
            r.used = 0;
        }
        uint256 left = r.used >= r.limit ? 0 : r.limit - r.used;
        if (usd > left) revert RateLimited(left);
        r.used += usd;
    }

    function _setLimit(RateLimit storage r, uint256 limit, uint256 window) private {
        if (window == 0 || window > MAX_WINDOW) revert InvalidWindow(window);
        r.limit = limit;
        r.window = window;
    }
}
