// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @notice A rebasing yield token in the manner of Mountain Protocol's USDM: holders own shares and
/// `balanceOf` is `shares * rewardMultiplier / 1e18`, so yield arrives as a change of every balance
/// (and of `totalSupply`) with no transfer and no `Transfer` event, only `RewardMultiplier`. Amounts
/// in `transfer`/`approve` are token units; a transfer moves `floor(amount * 1e18 / multiplier)`
/// shares, so the recipient may see a unit less than was sent (a few wei at 18 decimals, a whole
/// token at 0 decimals). Unlike USDM the multiplier may also fall (a loss), but never to zero.
/// `decimals` is a constructor argument so tests can try 0, 6, 8 and 18.
contract RebasingToken is ERC20, Ownable {
    uint256 public constant BASE = 1e18;

    uint8 private immutable _decimals;
    uint256 public rewardMultiplier = BASE;
    uint256 public totalShares;
    mapping(address => uint256) private _shares;

    event RewardMultiplier(uint256 indexed value);

    error InvalidRewardMultiplier(uint256 value);

    constructor(string memory name_, string memory symbol_, uint8 decimals_, address owner_)
        ERC20(name_, symbol_)
        Ownable(owner_)
    {
        _decimals = decimals_;
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    function sharesOf(address account) external view returns (uint256) {
        return _shares[account];
    }

    function convertToShares(uint256 amount) public view returns (uint256) {
        return Math.mulDiv(amount, BASE, rewardMultiplier);
    }

    function convertToTokens(uint256 shares) public view returns (uint256) {
        return Math.mulDiv(shares, rewardMultiplier, BASE);
    }

    function balanceOf(address account) public view override returns (uint256) {
        return convertToTokens(_shares[account]);
    }

    function totalSupply() public view override returns (uint256) {
        return convertToTokens(totalShares);
    }

    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }

    function burn(address from, uint256 amount) external onlyOwner {
        _burn(from, amount);
    }

    /// @notice Books the yield (or loss): every balance becomes shares × `value` / 1e18.
    function setRewardMultiplier(uint256 value) external onlyOwner {
        _setRewardMultiplier(value);
    }

    function addRewardMultiplier(uint256 increment) external onlyOwner {
        _setRewardMultiplier(rewardMultiplier + increment);
    }

    function _setRewardMultiplier(uint256 value) private {
        if (value == 0) revert InvalidRewardMultiplier(value);
        rewardMultiplier = value;
        emit RewardMultiplier(value);
    }

    /// @dev Moves shares instead of OpenZeppelin's balances (which stay unused).
    function _update(address from, address to, uint256 value) internal override {
        uint256 shares = convertToShares(value);
        if (from == address(0)) {
            totalShares += shares;
        } else {
            uint256 balance = balanceOf(from);
            if (value > balance) revert ERC20InsufficientBalance(from, balance, value);
            _shares[from] -= shares;
        }
        if (to == address(0)) {
            totalShares -= shares;
        } else {
            _shares[to] += shares;
        }
        emit Transfer(from, to, value);
    }
}
