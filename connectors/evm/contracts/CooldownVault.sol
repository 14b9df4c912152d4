// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @notice The non-standard "request, then claim after a timestamp" redemption of staked-stablecoin
/// style funds (the pattern of Ethena's sUSDe cooldown): deposits are instant ERC-4626; a holder
/// `cooldownShares` (shares burnt at today's NAV, assets set aside until `cooldownEnd`), then
/// `unstake`s after the cooldown. The standard `withdraw`/`redeem` are disabled while the cooldown is
/// on (`maxWithdraw`/`maxRedeem` are 0). A second cooldown adds to the first and restarts the clock.
contract CooldownVault is ERC4626, Ownable {
    using SafeERC20 for IERC20;

    struct UserCooldown {
        uint104 cooldownEnd;
        uint152 underlyingAmount;
    }

    mapping(address => UserCooldown) public cooldowns;
    uint256 public totalCooling;
    uint24 public cooldownDuration;

    event CooldownStarted(address indexed owner, uint256 shares, uint256 assets, uint256 cooldownEnd);
    event Unstaked(address indexed owner, address indexed receiver, uint256 assets);

    error InvalidCooldown(uint256 cooldownEnd, uint256 now_);
    error NothingToUnstake();

    constructor(IERC20 asset_, string memory name_, string memory symbol_, address owner_, uint24 duration_)
        ERC20(name_, symbol_)
        ERC4626(asset_)
        Ownable(owner_)
    {
        cooldownDuration = duration_;
    }

    function _decimalsOffset() internal pure override returns (uint8) {
        return 12;
    }

    function totalAssets() public view override returns (uint256) {
        return IERC20(asset()).balanceOf(address(this)) - totalCooling;
    }

    function setTotalAssets(uint256 target) external onlyOwner {
        uint256 held = totalAssets();
        if (target > held) {
            IERC20(asset()).safeTransferFrom(msg.sender, address(this), target - held);
        } else if (target < held) {
            IERC20(asset()).safeTransfer(msg.sender, held - target);
        }
    }

    function setCooldownDuration(uint24 duration_) external onlyOwner {
        cooldownDuration = duration_;
    }

    function maxWithdraw(address owner) public view override returns (uint256) {
        return cooldownDuration == 0 ? super.maxWithdraw(owner) : 0;
    }

    function maxRedeem(address owner) public view override returns (uint256) {
        return cooldownDuration == 0 ? super.maxRedeem(owner) : 0;
    }

    function cooldownShares(uint256 shares) external returns (uint256 assets) {
        assets = previewRedeem(shares);
        _burn(msg.sender, shares);
        UserCooldown storage c = cooldowns[msg.sender];
        c.cooldownEnd = uint104(block.timestamp + cooldownDuration);
        c.underlyingAmount += uint152(assets);
        totalCooling += assets;
        emit CooldownStarted(msg.sender, shares, assets, c.cooldownEnd);
    }

    function unstake(address receiver) external {
        UserCooldown storage c = cooldowns[msg.sender];
        uint256 assets = c.underlyingAmount;
        if (assets == 0) revert NothingToUnstake();
        if (block.timestamp < c.cooldownEnd) revert InvalidCooldown(c.cooldownEnd, block.timestamp);
        c.cooldownEnd = 0;
        c.underlyingAmount = 0;
        totalCooling -= assets;
        IERC20(asset()).safeTransfer(receiver, assets);
        emit Unstaked(msg.sender, receiver, assets);
    }
}
