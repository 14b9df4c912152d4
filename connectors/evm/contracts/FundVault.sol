// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {Permissioned} from "./Permissioned.sol";

/// @notice A tokenized fund: ERC-4626 shares (18 decimals) over a 6-decimal stablecoin, held only by
/// verified investors. The manager (owner) moves the NAV by setting the assets the vault holds
/// (`setTotalAssets` pulls the difference from, or pays it to, the manager), as a fund administrator
/// books a valuation; subscriptions and redemptions then happen at the new price per share.
contract FundVault is ERC4626, Permissioned, Pausable {
    using SafeERC20 for IERC20;

    event NavSet(uint256 totalAssets, uint256 totalSupply);

    constructor(IERC20 asset_, string memory name_, string memory symbol_, address owner_)
        ERC20(name_, symbol_)
        ERC4626(asset_)
        Ownable(owner_)
    {}

    function _decimalsOffset() internal pure override returns (uint8) {
        return 12;
    }

    function setTotalAssets(uint256 target) external onlyOwner {
        uint256 held = totalAssets();
        if (target > held) {
            IERC20(asset()).safeTransferFrom(msg.sender, address(this), target - held);
        } else if (target < held) {
            IERC20(asset()).safeTransfer(msg.sender, held - target);
        }
        emit NavSet(target, totalSupply());
    }

    function pause() external onlyOwner {
        _pause();
    }

    function unpause() external onlyOwner {
        _unpause();
    }

    function _update(address from, address to, uint256 value) internal override whenNotPaused {
        _checkTransfer(from, to);
        super._update(from, to, value);
    }
}
