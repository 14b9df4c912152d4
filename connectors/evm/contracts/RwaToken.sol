// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Permissioned} from "./Permissioned.sol";

/// @notice A permissioned real-world-asset token (18 decimals): only verified addresses may hold it.
contract RwaToken is ERC20, Permissioned {
    constructor(string memory name_, string memory symbol_, address owner_) ERC20(name_, symbol_) Ownable(owner_) {}

    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        _checkTransfer(from, to);
        super._update(from, to, value);
    }
}
