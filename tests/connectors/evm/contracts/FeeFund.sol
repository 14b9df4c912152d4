// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ERC4626Fees} from "./ERC4626Fees.sol";

/// @notice A tokenized fund charging an entry and an exit fee (OpenZeppelin's ERC4626Fees pattern)
/// with shares of the asset's own decimals (no offset: 6-decimal shares over a 6-decimal
/// stablecoin). The manager books valuations with `setTotalAssets`; fees go to `feeRecipient`.
contract FeeFund is ERC4626Fees, Ownable {
    uint256 public entryFeeBps;
    uint256 public exitFeeBps;
    address public feeRecipient;
    uint256 public depositCap = type(uint256).max; // the fund's size limit, checked on every subscription

    error FeeTooHigh(uint256 bps, uint256 maxBps);
    error CapExceeded(uint256 cap, uint256 wouldHold);

    constructor(IERC20 asset_, string memory name_, string memory symbol_, address owner_, uint256 entryBps,
        uint256 exitBps, address recipient) ERC20(name_, symbol_) ERC4626(asset_) Ownable(owner_) {
        setFees(entryBps, exitBps);
        feeRecipient = recipient;
    }

    function setFees(uint256 entryBps, uint256 exitBps) public onlyOwner {
        if (entryBps > 500) revert FeeTooHigh(entryBps, 500);
        if (exitBps > 500) revert FeeTooHigh(exitBps, 500);
        entryFeeBps = entryBps;
        exitFeeBps = exitBps;
    }

    function setDepositCap(uint256 cap) external onlyOwner {
        depositCap = cap;
    }

    function _deposit(address caller, address receiver, uint256 assets, uint256 shares) internal override {
        if (totalAssets() + assets > depositCap) revert CapExceeded(depositCap, totalAssets() + assets);
        super._deposit(caller, receiver, assets, shares);
    }

    function setTotalAssets(uint256 target) external onlyOwner {
        uint256 held = totalAssets();
        if (target > held) {
            SafeERC20.safeTransferFrom(IERC20(asset()), msg.sender, address(this), target - held);
        } else if (target < held) {
            SafeERC20.safeTransfer(IERC20(asset()), msg.sender, held - target);
        }
    }

    function _entryFeeBasisPoints() internal view override returns (uint256) {
        return entryFeeBps;
    }

    function _exitFeeBasisPoints() internal view override returns (uint256) {
        return exitFeeBps;
    }

    function _entryFeeRecipient() internal view override returns (address) {
        return feeRecipient;
    }

    function _exitFeeRecipient() internal view override returns (address) {
        return feeRecipient;
    }
}
