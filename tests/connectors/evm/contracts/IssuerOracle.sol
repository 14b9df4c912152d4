// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @notice An issuer's NAV oracle that is not an AggregatorV3: `getPriceData()` returns the price
/// with 18 decimals and the time it was set (the pattern of Ondo's RWA oracle and similar), and
/// reverts with a custom error once the price is older than `maxAge`.
contract IssuerOracle is Ownable {
    uint256 private _price;
    uint256 private _updatedAt;
    uint256 public maxAge;

    error StalePrice(uint256 updatedAt, uint256 maxAge);

    constructor(address owner_, uint256 maxAge_) Ownable(owner_) {
        maxAge = maxAge_;
    }

    function setPrice(uint256 price) external onlyOwner {
        _price = price;
        _updatedAt = block.timestamp;
    }

    function setMaxAge(uint256 maxAge_) external onlyOwner {
        maxAge = maxAge_;
    }

    function getPriceData() external view returns (uint256 price, uint256 timestamp) {
        if (block.timestamp > _updatedAt + maxAge) revert StalePrice(_updatedAt, maxAge);
        return (_price, _updatedAt);
    }
}
