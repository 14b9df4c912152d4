// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @notice A gold token that takes a fee on every transfer, as PAX Gold does (18 decimals, 2 bps on
/// mainnet): the sender is debited `value`, the recipient credited `value - getFeeFor(value)` and the
/// fee goes to `feeRecipient`, with a `Transfer` event for each leg and a `FeeCollected`. A transfer
/// from or to an exempt address (PAXG's fee exclusions: the issuer, its desks) pays no fee, nor do
/// mints and burns. An AMM pair that is not exempt therefore receives less than a router sent it:
/// only the router's `...SupportingFeeOnTransferTokens` swaps work when selling this token, and
/// `getAmountsOut` overstates what a buyer receives by the fee on the pair's transfer out.
contract FeeOnTransferToken is ERC20, Ownable {
    uint256 public constant BPS = 10_000;
    uint256 public constant MAX_FEE_BPS = 100;

    uint256 public feeBps;
    address public feeRecipient;
    mapping(address => bool) public isFeeExempt;

    event FeeCollected(address indexed from, address indexed to, uint256 value);
    event FeeBpsSet(uint256 bps);
    event FeeRecipientSet(address indexed recipient);
    event FeeExemptSet(address indexed account, bool exempt);

    error FeeTooHigh(uint256 bps);
    error ZeroAddress();

    constructor(string memory name_, string memory symbol_, uint256 feeBps_, address feeRecipient_, address owner_)
        ERC20(name_, symbol_)
        Ownable(owner_)
    {
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_);
        if (feeRecipient_ == address(0)) revert ZeroAddress();
        feeBps = feeBps_;
        feeRecipient = feeRecipient_;
    }

    /// @notice The fee a non-exempt transfer of `value` pays (rounded down, as PAXG's).
    function getFeeFor(uint256 value) public view returns (uint256) {
        return (value * feeBps) / BPS;
    }

    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }

    function burn(address from, uint256 amount) external onlyOwner {
        _burn(from, amount);
    }

    function setFeeBps(uint256 bps) external onlyOwner {
        if (bps > MAX_FEE_BPS) revert FeeTooHigh(bps);
        feeBps = bps;
        emit FeeBpsSet(bps);
    }

    function setFeeRecipient(address recipient) external onlyOwner {
        if (recipient == address(0)) revert ZeroAddress();
        feeRecipient = recipient;
        emit FeeRecipientSet(recipient);
    }

    function setFeeExempt(address account, bool exempt) external onlyOwner {
        isFeeExempt[account] = exempt;
        emit FeeExemptSet(account, exempt);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from == address(0) || to == address(0) || isFeeExempt[from] || isFeeExempt[to]) {
            super._update(from, to, value);
            return;
        }
        uint256 fee = getFeeFor(value);
        if (fee != 0) {
            super._update(from, feeRecipient, fee);
            emit FeeCollected(from, feeRecipient, fee);
        }
        super._update(from, to, value - fee);
    }
}
