// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @notice An ERC-3643-style allow-list folded into the token: the token is its own identity registry
/// (`isVerified`) and its own compliance module (`canTransfer`), reached the ERC-3643 way through
/// `identityRegistry()` and `compliance()`. A transfer to or from an unverified holder reverts with
/// `NotVerified`, so a connector can ask first instead of paying for a revert.
abstract contract Permissioned is Ownable {
    mapping(address => bool) private _verified;

    error NotVerified(address account);

    event VerificationChanged(address indexed account, bool verified);

    function setVerified(address account, bool verified) external onlyOwner {
        _verified[account] = verified;
        emit VerificationChanged(account, verified);
    }

    function isVerified(address account) public view returns (bool) {
        return _verified[account];
    }

    function identityRegistry() external view returns (address) {
        return address(this);
    }

    function compliance() external view returns (address) {
        return address(this);
    }

    /// @dev Mints (from == 0) and burns (to == 0) only check the holder.
    function canTransfer(address from, address to, uint256) public view returns (bool) {
        return (from == address(0) || _verified[from]) && (to == address(0) || _verified[to]);
    }

    function _checkTransfer(address from, address to) internal view {
        if (from != address(0) && !_verified[from]) revert NotVerified(from);
        if (to != address(0) && !_verified[to]) revert NotVerified(to);
    }
}
