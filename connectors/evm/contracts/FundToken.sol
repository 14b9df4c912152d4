// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Permissioned} from "./Permissioned.sol";

/// @notice The share token of a fund sold through an issuer's manager contract (OUSG, USTB, BUIDL
/// style): 18 decimals, held only by verified investors, minted and burnt by the one `minter` the
/// owner names (the `IssuerManager`). The token does not know the NAV: the manager prices it.
/// The owner may mint too, so a test or the devnet can seed holders without going through the manager.
contract FundToken is ERC20, Permissioned {
    address public minter;

    event MinterSet(address indexed minter);

    error NotMinter(address caller);

    constructor(string memory name_, string memory symbol_, address owner_) ERC20(name_, symbol_) Ownable(owner_) {}

    modifier onlyMinterOrOwner() {
        if (msg.sender != minter && msg.sender != owner()) revert NotMinter(msg.sender);
        _;
    }

    function setMinter(address minter_) external onlyOwner {
        minter = minter_;
        emit MinterSet(minter_);
    }

    function mint(address to, uint256 amount) external onlyMinterOrOwner {
        _mint(to, amount);
    }

    /// @notice Burns without an allowance, as a transfer agent cancels shares: only the manager (which
    /// burns the caller's own shares on a redemption) or the owner may.
    function burn(address from, uint256 amount) external onlyMinterOrOwner {
        _burn(from, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        _checkTransfer(from, to);
        super._update(from, to, value);
    }
}
