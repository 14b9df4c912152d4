// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @notice A two-token x·y = k pool (base token against a quote stablecoin) with a fee on the input,
/// the Uniswap V2 formula without LP shares: the owner provides the liquidity.
contract ConstantProductPool is Ownable, Pausable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    IERC20 public immutable base;
    IERC20 public immutable quote;
    uint256 public immutable feeBps;
    uint256 private reserveBase;
    uint256 private reserveQuote;

    event Swap(address indexed sender, address indexed tokenIn, uint256 amountIn, uint256 amountOut, address indexed to);
    event Sync(uint256 reserveBase, uint256 reserveQuote);

    error UnknownToken(address token);
    error InsufficientOutput(uint256 amountOut, uint256 minAmountOut);
    error Expired(uint256 deadline, uint256 timestamp);
    error InsufficientLiquidity();
    error ZeroAmount();

    constructor(IERC20 base_, IERC20 quote_, uint256 feeBps_, address owner_) Ownable(owner_) {
        require(feeBps_ < 10_000, "fee");
        base = base_;
        quote = quote_;
        feeBps = feeBps_;
    }

    function getReserves() external view returns (uint256, uint256) {
        return (reserveBase, reserveQuote);
    }

    function _sides(address tokenIn) private view returns (uint256 rIn, uint256 rOut) {
        if (tokenIn == address(base)) return (reserveBase, reserveQuote);
        if (tokenIn == address(quote)) return (reserveQuote, reserveBase);
        revert UnknownToken(tokenIn);
    }

    function getAmountOut(uint256 amountIn, address tokenIn) public view returns (uint256) {
        if (amountIn == 0) revert ZeroAmount();
        (uint256 rIn, uint256 rOut) = _sides(tokenIn);
        if (rIn == 0 || rOut == 0) revert InsufficientLiquidity();
        uint256 inWithFee = amountIn * (10_000 - feeBps);
        return (inWithFee * rOut) / (rIn * 10_000 + inWithFee);
    }

    function getAmountIn(uint256 amountOut, address tokenOut) public view returns (uint256) {
        if (amountOut == 0) revert ZeroAmount();
        address tokenIn = tokenOut == address(base) ? address(quote) : address(base);
        if (tokenOut != address(base) && tokenOut != address(quote)) revert UnknownToken(tokenOut);
        (uint256 rIn, uint256 rOut) = _sides(tokenIn);
        if (amountOut >= rOut) revert InsufficientLiquidity();
        return (rIn * amountOut * 10_000) / ((rOut - amountOut) * (10_000 - feeBps)) + 1;
    }

    function addLiquidity(uint256 amountBase, uint256 amountQuote) external onlyOwner {
        base.safeTransferFrom(msg.sender, address(this), amountBase);
        quote.safeTransferFrom(msg.sender, address(this), amountQuote);
        reserveBase += amountBase;
        reserveQuote += amountQuote;
        emit Sync(reserveBase, reserveQuote);
    }

    function swap(address tokenIn, uint256 amountIn, uint256 minAmountOut, address to, uint256 deadline)
        external
        whenNotPaused
        nonReentrant
        returns (uint256 amountOut)
    {
        if (block.timestamp > deadline) revert Expired(deadline, block.timestamp);
        amountOut = getAmountOut(amountIn, tokenIn);
        if (amountOut < minAmountOut) revert InsufficientOutput(amountOut, minAmountOut);
        bool baseIn = tokenIn == address(base);
        IERC20(tokenIn).safeTransferFrom(msg.sender, address(this), amountIn);
        (baseIn ? quote : base).safeTransfer(to, amountOut);
        if (baseIn) {
            reserveBase += amountIn;
            reserveQuote -= amountOut;
        } else {
            reserveQuote += amountIn;
            reserveBase -= amountOut;
        }
        emit Swap(msg.sender, tokenIn, amountIn, amountOut, to);
        emit Sync(reserveBase, reserveQuote);
    }

    function pause() external onlyOwner {
        _pause();
    }

    function unpause() external onlyOwner {
        _unpause();
    }
}
